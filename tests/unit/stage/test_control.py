"""The stage's control plane with a fake worker, hop and socket (services/stage/control.py).

The KV cache config is a real vLLM KVCacheConfig, encoded as the coordinator
sends it; everything the control plane drives is a fake that records calls.
"""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace
from typing import Any

import torch
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheTensor,
)

from services.stage.control import ControlPlane, StageIdentity, register_message
from services.stage.membership import Membership
from shared import codec, curve, dropped, wire
from shared.vllm_bridge.kv_codec import decode_kv, encode_kv

COORDINATOR = "C" * 40
UPSTREAM = "U" * 40
LAST = "L" * 40
SPEC = FullAttentionSpec(block_size=16, num_kv_heads=2, head_size=8, dtype=torch.float32)
IDENTITY = StageIdentity(
    name="stage-0-15",
    start=0,
    end=15,
    num_layers=30,
    address="tcp://127.0.0.1:7001",
    fingerprint="shape",
    metrics_url="http://127.0.0.1:9101/metrics",
    dtype="float32",
    max_model_len=64,
)


def kv_config(num_blocks: int) -> bytes:
    layer = "model.layers.0.self_attn.attn"
    group = KVCacheGroupSpec(layer_names=[layer], kv_cache_spec=SPEC)
    page = SPEC.page_size_bytes
    tensor = KVCacheTensor(
        size=num_blocks * page, layers=[layer], layer_stride=num_blocks * page, block_stride=page
    )
    return encode_kv(
        KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[tensor], kv_cache_groups=[group])
    )


def configure(num_blocks: int = 10, generation: int = 2, **fields: Any) -> wire.Configure:
    return wire.Configure(
        kv_cache_config=kv_config(num_blocks),
        kv_cache_layout="NHD",
        next_address=fields.pop("next_address", "tcp://127.0.0.1:7002"),
        stage_index=0,
        num_stages=2,
        generation=generation,
        live_request_ids=["a"],
        **fields,
    )


class FakeWorker:
    """Records what the control plane asks of the model runner."""

    is_first, is_last = True, False
    vllm_config = SimpleNamespace(
        model_config=SimpleNamespace(
            max_model_len=64, get_vocab_size=lambda: 100, get_hidden_size=lambda: 4
        ),
        scheduler_config=SimpleNamespace(max_num_seqs=4, max_num_batched_tokens=32),
    )

    def __init__(self) -> None:
        self.configured: list[tuple[Any, str]] = []
        self.kept: list[set[str]] = []

    def configure(self, kv_cache_config: Any, layout: str) -> None:
        self.configured.append((kv_cache_config, layout))

    def drop_requests(self, keep: set[str]) -> int:
        self.kept.append(keep)
        return 1

    def loaded_summary(self) -> tuple[list[int], list[str]]:
        return list(range(15)), ["model.embed_tokens.weight"]

    def kv_cache_spec(self) -> dict[str, Any]:
        return {"model.layers.0.self_attn.attn": SPEC}

    def available_kv_bytes(self) -> int:
        return 1 << 20

    def kv_cache_layouts(self) -> list[str]:
        return ["NHD"]


class FakeHop:
    """Records how Configure and Reset point the activation hop."""

    def __init__(self) -> None:
        self.next: list[tuple[str, str]] = []
        self.rings: list[tuple[int, bool, str, str]] = []

    def open_next(self, address: str, key: str) -> None:
        self.next.append((address, key))

    def open_ring(self, generation: int, fed: bool, address: str, key: str) -> None:
        self.rings.append((generation, fed, address, key))


class FakeSocket:
    """The control DEALER: keeps what was sent, decoded."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_multipart(self, parts: list[Any], flags: int = 0) -> None:
        self.sent.append(codec.decode(parts))


def make(
    secure: bool = False,
) -> tuple[ControlPlane, FakeWorker, FakeHop, FakeSocket, curve.AllowList]:
    worker, hop, sock = FakeWorker(), FakeHop(), FakeSocket()
    allow = curve.AllowList({COORDINATOR.encode()})
    plane = ControlPlane(
        IDENTITY,
        worker,  # type: ignore[arg-type]
        Membership(COORDINATOR.encode(), secure),
        hop,  # type: ignore[arg-type]
        sock,  # type: ignore[arg-type]
        allow,
        heartbeat_interval_s=1.0,
        heartbeat_misses=5,
    )
    return plane, worker, hop, sock, allow


def frames(msg: Any) -> list[bytes]:
    return codec.encode(msg)


def test_configure_allocates_the_kv_cache_and_points_the_hop() -> None:
    plane, worker, hop, sock, _ = make()
    assert not plane.on_control(frames(configure(ring_address="tcp://127.0.0.1:7009")))
    [(config, layout)] = worker.configured
    assert config == decode_kv(kv_config(10)) and layout == "NHD"
    assert worker.kept == [{"a"}]  # requests of an earlier chain go
    assert hop.next == [("tcp://127.0.0.1:7002", "")]
    # The first stage of two waits for the ring's tokens.
    assert hop.rings == [(2, True, "tcp://127.0.0.1:7009", "")]
    chain = plane.chain
    assert (chain.configured, chain.in_chain, chain.generation, chain.num_blocks) == (
        True,
        True,
        2,
        10,
    )
    assert chain.limits is not None and chain.limits.num_blocks == 10
    assert sock.sent == [wire.Configured(name="stage-0-15", num_blocks=10, error="")]


def test_a_later_chain_keeps_the_kv_cache_and_may_use_fewer_of_its_blocks() -> None:
    plane, worker, hop, sock, _ = make()
    plane.on_control(frames(configure(10, generation=2)))
    plane.on_control(frames(configure(10, generation=3)))
    assert len(worker.configured) == 1 and plane.chain.generation == 3
    # A smaller engine (a re-plan shrank it, or a new coordinator): the first 6 blocks.
    plane.on_control(frames(configure(6, generation=4)))
    assert sock.sent[-1] == wire.Configured(name="stage-0-15", num_blocks=6, error="")
    assert len(worker.configured) == 1 and plane.chain.num_blocks == 10
    assert plane.chain.limits is not None and plane.chain.limits.num_blocks == 6
    assert plane.chain.generation == 4
    plane.on_control(frames(configure(12, generation=5)))
    reply = sock.sent[-1]
    assert reply.num_blocks == 12
    assert reply.error == (
        "ValueError: this stage holds a KV cache of 10 blocks and cannot take 12 without "
        "allocating it again; restart it"
    )
    assert plane.chain.generation == 4 and len(hop.next) == 3  # nothing of chain 5 taken


def test_once_configured_a_stage_registers_with_no_more_kv_memory_than_it_holds() -> None:
    plane, _, _, sock, _ = make()
    assert plane.begin().available_kv_bytes == 1 << 20  # its budget (--kv-cache-gb)
    plane.on_control(frames(configure(10)))
    assert plane.register is not None
    assert plane.register.available_kv_bytes == 10 * SPEC.page_size_bytes
    plane.last_heard = -1e9  # the coordinator fell silent (restarted): announce again
    plane.announce(now=1e6)
    assert sock.sent[-1] == plane.register


def test_with_curve_configure_admits_the_upstream_and_ring_keys() -> None:
    plane, _, _, _, allow = make(secure=True)
    plane.on_control(frames(configure(upstream_key=UPSTREAM, ring_upstream_key=LAST)))
    for key in (COORDINATOR, UPSTREAM, LAST):
        assert allow.callback("layerbus", key.encode())
    assert not allow.callback("layerbus", b"X" * 40)
    assert (plane.chain.upstream, plane.chain.ring_upstream) == (UPSTREAM, LAST)


def test_without_curve_the_allow_list_stays_as_it_was() -> None:
    plane, _, _, _, allow = make(secure=False)
    plane.on_control(frames(configure(upstream_key=UPSTREAM)))
    assert not allow.callback("layerbus", UPSTREAM.encode())


def test_reset_makes_the_stage_a_standby_holding_nothing() -> None:
    plane, worker, hop, _, _ = make()
    plane.on_control(frames(configure()))
    plane.on_control(frames(wire.Reset(generation=5)))
    assert worker.kept[-1] == set()
    assert hop.next[-1] == ("", "") and hop.rings[-1] == (5, False, "", "")
    assert (plane.chain.in_chain, plane.chain.generation, plane.chain.configured) == (
        False,
        5,
        True,
    )


def test_reset_before_configure_drops_no_requests() -> None:
    plane, worker, _, _, _ = make()
    plane.on_control(frames(wire.Reset(generation=1)))
    assert worker.kept == [] and plane.chain.generation == 1


def test_shutdown_stops_and_malformed_messages_are_dropped() -> None:
    plane, _, _, sock, _ = make()
    before = dropped.count("stage-control", "malformed")
    assert not plane.on_control([b"?", b""])
    assert dropped.count("stage-control", "malformed") == before + 1
    assert plane.on_control(frames(wire.Shutdown(reason="test")))
    assert sock.sent == []


def test_any_control_message_shows_the_coordinator_is_alive() -> None:
    plane, _, _, _, _ = make()
    plane.last_heard = 0.0
    plane.on_control(frames(wire.Reset(generation=1)))
    assert plane.last_heard > 0.0


def test_an_unconfigured_stage_registers_every_few_seconds() -> None:
    plane, _, _, sock, _ = make()
    plane.begin()
    t = plane.last_heard
    plane.announce(t)
    plane.announce(t + 1)  # registered a moment ago
    assert len(sock.sent) == 1
    register = sock.sent[0]
    assert isinstance(register, wire.Register)
    assert (register.name, register.layer_start, register.layer_end) == ("stage-0-15", 0, 15)
    assert register.data_address == "tcp://127.0.0.1:7001" and register.pid == os.getpid()
    assert register.available_kv_bytes == 1 << 20 and register.layers_loaded == list(range(15))
    assert decode_kv(register.kv_cache_specs) == {"model.layers.0.self_attn.attn": SPEC}
    plane.announce(t + 4)
    assert sock.sent == [register, register]


def test_a_configured_stage_registers_again_when_the_coordinator_falls_silent() -> None:
    plane, _, _, sock, _ = make()
    plane.on_control(frames(configure()))
    sock.sent.clear()
    heard = plane.last_heard
    plane.announce(heard + 4.5)  # 4.5 s of silence: under 5 heartbeat intervals
    assert sock.sent == []
    plane.announce(heard + 5.5)
    assert [type(m) for m in sock.sent] == [wire.Register]


def test_leave_names_the_reason() -> None:
    plane, _, _, sock, _ = make()
    plane.request_leave("SIGTERM")
    assert plane.leaving == "SIGTERM"
    plane.leave()
    assert sock.sent == [wire.Leave(name="stage-0-15", pid=os.getpid(), reason="SIGTERM")]


def test_a_placed_stage_registers_with_the_offer_it_measured_a_pinned_one_without() -> None:
    measured = wire.Offer(
        name="host-7",
        pid=os.getpid(),
        num_layers=30,
        engine_fingerprint="shape",
        device="cpu",
        memory_bytes=1 << 30,
        decode_s=1e-3,
        prefill_s=2e-2,
    )
    placed = dataclasses.replace(IDENTITY, name="host-7", placed=True, offer=measured)
    got = codec.decode(codec.encode(register_message(placed, FakeWorker())))  # type: ignore[arg-type]
    assert isinstance(got, wire.Register) and got.placed and got.offer == measured
    pinned = dataclasses.replace(IDENTITY, offer=measured)  # --layers: the range is not placement's
    got = codec.decode(codec.encode(register_message(pinned, FakeWorker())))  # type: ignore[arg-type]
    assert isinstance(got, wire.Register) and not got.placed and got.offer is None
