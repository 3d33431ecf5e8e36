"""services/coordinator/engine.py: the engine thread's loop, commands and recovery over fakes."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs

from services.coordinator.engine import EngineHost
from services.coordinator.engine_core import PipelineEngineCore
from services.coordinator.micro_batch_control import RAISE_WINDOW_S
from services.coordinator.pipeline import PipelineFailed
from shared import wire
from shared.engine_settings import EngineSettings
from tests.unit.coordinator.engine_fakes import FakeLink, FakeStage, FakeVllmCore, Sent, generate

GW1, GW2 = b"gw-1", b"gw-2"


def host_with(
    stages: int = 2, micro_batches: int = 0, recovery_timeout_s: float = 60.0
) -> tuple[EngineHost, FakeVllmCore, FakeLink, Sent]:
    link = FakeLink([FakeStage(f"s{i}", (2 * i, 2 * i + 2)) for i in range(stages)])
    sent = Sent()
    host = EngineHost(
        EngineSettings(model="unused", max_model_len=64),
        link,  # type: ignore[arg-type]
        sent,
        configure_timeout_s=30.0,
        micro_batches=micro_batches,
        recovery_timeout_s=recovery_timeout_s,
    )
    core = FakeVllmCore(host.micro_batches, host.max_micro_batches)
    host.core = PipelineEngineCore(
        core,
        link,  # type: ignore[arg-type]
        host.publisher,
        host.depth,
        host.micro_batches,
        host.max_micro_batches,
        max_model_len=64,
    )
    return host, core, link, sent


def test_m_starts_at_one_per_stage_with_two_steps_each_in_flight() -> None:
    host, core, _, _ = host_with(stages=2)
    assert (host.micro_batches, host.max_micro_batches, host.depth) == (2, 8, 2)
    assert core.batch_queue_size == 4 and core.batch_queue is not None
    assert core.batch_queue.maxlen == 16


def test_commands_reach_the_engine_core_and_an_abort_refreshes_the_snapshot() -> None:
    host, core, _, _ = host_with()
    host.commands.put((GW1, generate("a", [1, 2])))
    host.commands.put((GW2, generate("b", [3])))
    host._drain_commands(block=False)
    assert [r.request_id for r in core.added] == ["a", "b"] and host.snapshot == {}
    host.commands.put((GW1, wire.Abort(request_ids=["a", "b"])))
    host._drain_commands(block=True)
    assert core.aborted == ["a"] and host.publisher.running() == ["b"]
    assert host.snapshot["num_total_blocks"] == 10 and host.snapshot["micro_batches"] == 2


def test_the_loop_steps_publishes_and_updates_the_snapshot() -> None:
    host, core, link, _ = host_with()

    def send(identity: bytes, msg: msgspec.Struct) -> None:
        received.append((identity, msg))
        host.stopping.set()

    received: list[tuple[bytes, msgspec.Struct]] = []
    host.publisher.send = send
    host.commands.put((GW1, generate("a", [1])))
    out = EngineCoreOutput(request_id="a", new_token_ids=[7])
    core.results.append({0: EngineCoreOutputs(outputs=[out])})
    link.steps_sent = 3
    host._loop()
    ((identity, msg),) = received
    assert identity == GW1 and isinstance(msg, wire.Outputs) and msg.items[0].token_ids == [7]
    assert host.snapshot["steps"] == 3


def test_a_broken_chain_is_rebuilt_and_requests_resume() -> None:
    host, core, link, sent = host_with()
    host.publisher.adopt("a", GW1, 3)
    core.scheduler.requests["a"] = SimpleNamespace(request_id="a")
    link.broken = "s1 stopped responding"
    link.broken_at = time.monotonic() - 5.0  # the loss was noticed 5 s ago
    link.offers.append([FakeStage("s0", (0, 2)), FakeStage("s1b", (2, 4))])
    host._recover()
    assert host.state == "serving" and host.recoveries == 1
    assert core.scheduler.restarts == 1 and link.broken is None
    assert host.snapshot["recoveries"] == 1 and host.snapshot["generation"] == link.generation
    assert host.last_recovery_s >= 5.0 and host.snapshot["last_recovery_s"] >= 5.0
    assert host.publisher.running() == ["a"] and sent.messages == []


def test_no_chain_within_the_timeout_fails_requests_until_one_comes() -> None:
    host, core, link, sent = host_with(recovery_timeout_s=0.0)
    host.publisher.adopt("a", GW1, 3)
    link.broken = "s1 stopped responding"
    states: list[str] = []
    link.offers = [None, None, [FakeStage("s0", (0, 2)), FakeStage("s1b", (2, 4))]]  # type: ignore[list-item]
    original = link.take_offer

    def take_offer() -> Any:
        states.append(host.state)
        return original()

    link.take_offer = take_offer  # type: ignore[method-assign]
    host._recover()
    assert states == ["recovering", "unavailable", "unavailable"]
    assert core.aborted == ["a"]
    (failed,) = sent.outputs(GW1)
    assert failed.finish_reason == "error" and "LAYERBUS_RECOVERY_TIMEOUT_S" in str(failed.error)
    assert link.failure == failed.error and host.state == "serving"


def test_m_is_raised_when_every_micro_batch_travels_and_the_stages_idle() -> None:
    host, core, link, _ = host_with(stages=2)
    core.scheduler.running = [object()] * 32
    for stage in link.chain:
        stage.beats(0.0, at=1000.0)
    host._maybe_raise_micro_batches()  # the first window starts at once
    assert host.micro_batches == 2
    host.window.start -= RAISE_WINDOW_S
    for stage in link.chain:
        stage.beats(1.0, at=1005.0)  # 20 % busy
    link.in_flight_average = 2.0
    host._maybe_raise_micro_batches()
    assert host.micro_batches == 8  # ceil(2 x 0.95 / 0.2) = 10, capped at 4 per stage
    assert core.batch_queue_size == 16 and core.scheduler.micro.count == 8


def test_m_is_kept_while_a_stage_waits_for_a_cpu_and_the_log_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, core, link, _ = host_with(stages=2)
    core.scheduler.running = [object()] * 32
    for stage in link.chain:
        stage.beats(0.0, at=1000.0, cpu_wait_s=0.0)
    host._maybe_raise_micro_batches()
    link.in_flight_average = 2.0
    for window in (1, 2):
        host.window.start -= RAISE_WINDOW_S
        for stage in link.chain:
            # 20 % busy, and waited 1 s of each 5 for a CPU: starved, not idle
            stage.beats(1.0 * window, at=1000.0 + 5 * window, cpu_wait_s=1.0 * window)
        with caplog.at_level("INFO", logger="layerbus.coordinator"):
            host._maybe_raise_micro_batches()
    assert host.micro_batches == 2 and core.scheduler.micro.count == 2
    kept = [r.getMessage() for r in caplog.records if "keeping 2 micro-batches" in r.getMessage()]
    assert len(kept) == 1 and "waited for a CPU 20% of the last 5 s" in kept[0]
    # Once the stages stop waiting, the busy rule raises M again.
    host.window.start -= RAISE_WINDOW_S
    for stage in link.chain:
        stage.beats(3.0, at=1015.0, cpu_wait_s=2.0)
    host._maybe_raise_micro_batches()
    assert host.micro_batches == 8


def test_a_fixed_m_is_never_raised() -> None:
    host, core, link, _ = host_with(stages=2, micro_batches=2)
    core.scheduler.running = [object()] * 32
    link.in_flight_average = 2.0
    host.window.start = -RAISE_WINDOW_S
    host._maybe_raise_micro_batches()
    assert host.micro_batches == 2 and host.window.start == -RAISE_WINDOW_S


def test_an_engine_that_cannot_start_says_why_and_is_ready_to_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, _, _, _ = host_with()

    def start_engine() -> None:
        raise ValueError("KV cache too small")

    monkeypatch.setattr(host, "start_engine", start_engine)
    host.run()
    assert host.ready.is_set() and host.error == "ValueError: KV cache too small"
    assert host.state == "starting" and not host.stage_failed  # the coordinator stops


def test_a_stage_failing_the_first_configure_is_a_stage_failure_not_a_fatal_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, _, _, _ = host_with()

    def start_engine() -> None:
        raise PipelineFailed("s1 could not configure: stage s1 stopped responding")

    monkeypatch.setattr(host, "start_engine", start_engine)
    host.run()
    assert host.ready.is_set() and host.stage_failed and host.state == "starting"
    assert host.error == "PipelineFailed: s1 could not configure: stage s1 stopped responding"
