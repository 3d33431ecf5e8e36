"""PipelineLink: generations, stale results, a broken chain (no stages, fake sockets)."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from services.coordinator.pipeline import ChainBroken, PipelineFailed, PipelineLink
from shared import wire
from shared.settings import TransportSettings


class _Record:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.identity = name.encode()
        self.layers = (0, 30)
        self.state = "registered"
        self.num_blocks = 0
        self.info = wire.Register(
            name=name,
            layer_start=0,
            layer_end=30,
            num_layers=30,
            data_address=f"tcp://127.0.0.1:{port}",
            kv_cache_specs=b"",
            available_kv_bytes=1,
            kv_cache_layouts=[],
            engine_fingerprint="",
            pid=1,
        )


def _plan(tokens: int = 1) -> wire.StepPlan:
    cached = wire.CachedRequestsPlan([], [], [], {}, [], [], [])
    return wire.StepPlan(
        new_requests=[],
        cached=cached,
        num_scheduled_tokens={},
        total_num_scheduled_tokens=tokens,
        finished_req_ids=[],
    )


@pytest.fixture
def link() -> Any:
    ctx = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    lk = PipelineLink(ctx, TransportSettings())
    lk.attach([_Record("last", port)], lambda identity, msg: None)
    yield lk
    lk.close()
    sink.close(linger=0)
    ctx.term()


def _result(link: PipelineLink, step_id: int, generation: int | None = None) -> wire.StepResult:
    return wire.StepResult(
        step_id=step_id,
        req_ids=[],
        sampled_token_ids=[],
        generation=link.generation if generation is None else generation,
    )


def test_result_of_current_generation_settles_the_step(link: PipelineLink) -> None:
    future = link.submit(_plan())
    assert link.resolve(_result(link, 1))
    assert future.result(timeout=1).step_id == 1


def test_result_of_an_old_generation_is_ignored(link: PipelineLink) -> None:
    future = link.submit(_plan())
    assert not link.resolve(_result(link, 1, generation=link.generation - 1))
    assert not future.done()


def test_broken_chain_fails_steps_and_refuses_new_ones(link: PipelineLink) -> None:
    future = link.submit(_plan())
    link.break_chain("stage x stopped responding")
    with pytest.raises(ChainBroken):
        future.result(timeout=1)
    with pytest.raises(ChainBroken):
        link.submit(_plan()).result(timeout=1)


def test_step_error_fails_in_flight_steps_but_keeps_serving(link: PipelineLink) -> None:
    first = link.submit(_plan())
    second = link.submit(_plan())
    bad = _result(link, 1)
    bad.error = "stage y: boom"
    link.resolve(bad)
    for future in (first, second):
        with pytest.raises(PipelineFailed, match="boom"):
            future.result(timeout=1)
    assert link.failure is None
    assert not link.submit(_plan()).done()


def test_new_chain_gets_a_new_generation(link: PipelineLink) -> None:
    before = link.generation
    link.attach(link.chain, lambda identity, msg: None)
    assert link.generation == before + 1


def test_counts_busy_and_empty_steps(link: PipelineLink) -> None:
    link.submit(_plan(tokens=0))
    link.submit(_plan(tokens=3))
    assert link.in_flight() == (2, 1)
    assert link.empty_steps_sent == 1
    assert link.max_in_flight == 1


def test_offer_only_when_asked(link: PipelineLink) -> None:
    link.offer(link.chain)
    assert link.take_offer() is None
    link.request_chain()
    link.offer(link.chain)
    assert link.take_offer() == link.chain


def test_a_ring_to_a_loopback_first_stage_from_another_host_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from services.coordinator.pipeline import warn_unreachable_ring

    def stage(name: str, address: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, info=SimpleNamespace(data_address=address))

    with caplog.at_level("ERROR", logger="layerbus.coordinator"):
        warn_unreachable_ring(stage("a", "tcp://127.0.0.1:1"), stage("b", "tcp://127.0.0.1:2"))
        warn_unreachable_ring(stage("a", "tcp://10.0.0.1:1"), stage("b", "tcp://10.0.0.2:2"))
        assert caplog.records == []
        warn_unreachable_ring(stage("a", "tcp://127.0.0.1:1"), stage("b", "tcp://10.0.0.2:2"))
    [record] = caplog.records
    assert "start a with --bind (or --advertise)" in record.getMessage()


def _kv_config() -> Any:
    import torch
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    spec = FullAttentionSpec(block_size=16, num_kv_heads=2, head_size=8, dtype=torch.float32)
    group = KVCacheGroupSpec(layer_names=["model.layers.0.self_attn.attn"], kv_cache_spec=spec)
    return KVCacheConfig(num_blocks=8, kv_cache_tensors=[], kv_cache_groups=[group])


def test_a_stage_refusing_its_configure_is_named_for_the_caller_to_drop(
    link: PipelineLink,
) -> None:
    def answer(identity: bytes, msg: Any) -> None:
        link.configured(wire.Configured(name="last", num_blocks=8, error="out of memory"))

    link.send_to_stage = answer
    with pytest.raises(PipelineFailed, match="last could not configure: out of memory"):
        link.configure([_kv_config()], "NHD", timeout=5)
    assert link.refused == "last"


def test_a_stage_dying_while_configuring_is_not_a_refusal(link: PipelineLink) -> None:
    link.send_to_stage = lambda identity, msg: link.break_chain("stage last stopped responding")
    with pytest.raises(PipelineFailed, match="stopped responding"):
        link.configure([_kv_config()], "NHD", timeout=5)
    assert link.refused is None


def test_configure_stops_at_once_when_a_stage_died_before_it(link: PipelineLink) -> None:
    sent: list[Any] = []
    link.send_to_stage = lambda identity, msg: sent.append(msg)
    link.break_chain("stage first stopped responding")
    with pytest.raises(PipelineFailed, match="first stopped responding"):
        link.configure([_kv_config()], "NHD", timeout=60)
    assert sent == []  # no Configure waits for a chain that is already broken


def test_forgetting_a_chain_the_engine_did_not_start_on_leaves_a_clean_link(
    link: PipelineLink,
) -> None:
    link.kv_configs[(0, 30)] = _kv_config()
    link.refused = "last"
    link.break_chain("stage last stopped responding")
    link.forget_chain()
    assert (link.chain, link.kv_configs, link.broken, link.refused) == ([], {}, None, None)
    assert link.failure is None and not link.wants_chain
