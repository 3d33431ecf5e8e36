"""Fakes of vLLM's EngineCore and of PipelineLink for the engine-core and engine-thread tests.

Each fake has only the attributes services/coordinator/engine_core.py,
recovery.py and engine.py read; test_engine_core.py checks by name that vLLM's
real classes still have them.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

import msgspec

from services.coordinator.micro_batches import MicroBatches
from services.coordinator.output_publisher import OutputPublisher
from shared import wire


class FakeScheduler:
    """vLLM's Scheduler as the engine core reads it: requests, running, KV blocks."""

    def __init__(self, micro_batches: int = 1, max_micro_batches: int = 4) -> None:
        self.requests: dict[str, Any] = {}
        self.running: list[Any] = []
        self.waiting: list[Any] = []
        self.micro = MicroBatches(micro_batches, max_micro_batches)
        pool = SimpleNamespace(num_gpu_blocks=11, get_num_free_blocks=lambda: 7)
        self.kv_cache_manager = SimpleNamespace(block_pool=pool)
        self.restarts = 0

    def has_requests(self) -> bool:
        return bool(self.requests)

    def restart_all(self) -> None:
        self.restarts += 1

    def micro_batch_sizes(self) -> list[int]:
        return self.micro.sizes(self.requests)


class FakeSources:
    """TokenSources as recovery clears it."""

    def __init__(self) -> None:
        self.cleared = 0

    def clear(self) -> None:
        self.cleared += 1


class FakeVllmCore:
    """vLLM's EngineCore: steps come from `results` (outputs, or an exception to raise)."""

    def __init__(self, micro_batches: int = 1, max_micro_batches: int = 4) -> None:
        self.scheduler = FakeScheduler(micro_batches, max_micro_batches)
        self.model_executor = SimpleNamespace(requests=None, sources=FakeSources())
        self.batch_queue: deque[Any] | None = None
        self.batch_queue_size = 1
        self.results: list[Any] = []
        self.aborted: list[str] = []
        self.added: list[Any] = []
        self.post_steps: list[bool] = []
        self.refuse_with: Exception | None = None

    def step(self) -> tuple[dict[int, Any], bool]:
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result, True

    def step_with_batch_queue(self) -> tuple[dict[int, Any] | None, bool]:
        return self.step()

    def post_step(self, model_executed: bool) -> None:
        self.post_steps.append(model_executed)

    def preprocess_add_request(self, request: Any) -> tuple[Any, int]:
        if self.refuse_with is not None:
            raise self.refuse_with
        return request, 0

    def add_request(self, request: Any, request_wave: int = 0) -> None:
        self.added.append(request)
        self.scheduler.requests[request.request_id] = request

    def abort_requests(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)
        for rid in request_ids:
            self.scheduler.requests.pop(rid, None)


class FakeStage:
    """A StageRecord as the engine thread reads it: name, layers, state, last heartbeat."""

    def __init__(self, name: str, layers: tuple[int, int], state: str = "configured") -> None:
        self.name = name
        self.layers = layers
        self.state = state
        self.beat: Any = None
        self.beat_at = 0.0

    def beats(self, busy_s: float, at: float, cpu_wait_s: float = 0.0) -> None:
        self.beat = SimpleNamespace(busy_s=busy_s, cpu_wait_s=cpu_wait_s)
        self.beat_at = at


class FakeLink:
    """PipelineLink as the engine thread sees it; the test plays the I/O thread."""

    def __init__(self, chain: list[FakeStage]) -> None:
        self.chain = chain
        self.kv_configs = {r.layers: object() for r in chain}
        self.broken: str | None = None
        self.broken_at = 0.0
        self.failure: str | None = None
        self.generation = 1
        self.offers: list[list[FakeStage]] = []
        self.chain_requests = 0
        self.reconfigured: list[list[str]] = []
        self.reconfigure_error: Exception | None = None
        self.dies_while_configuring = False
        self.released = 0
        self.in_flight_average = 0.0
        self.max_in_flight = 0
        self.steps_sent = 0
        self.empty_steps_sent = 0
        self.round_trip_ms = 0.0

    def request_chain(self) -> None:
        self.chain_requests += 1

    def take_offer(self) -> list[FakeStage] | None:
        return self.offers.pop(0) if self.offers else None

    def reconfigure(self, chain: list[FakeStage], timeout: float, live: list[str]) -> None:
        self.reconfigured.append([r.name for r in chain])
        if self.reconfigure_error is not None:
            raise self.reconfigure_error
        self.chain = chain
        self.generation += 1
        if self.dies_while_configuring:
            self.broken = f"{chain[-1].name} died"

    def release_failed_steps(self) -> None:
        self.released += 1

    def take_in_flight_average(self) -> float:
        return self.in_flight_average

    def in_flight(self) -> tuple[int, int]:
        return 0, 0


class Sent:
    """Records what the engine thread hands the I/O thread, per gateway."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, msgspec.Struct]] = []

    def __call__(self, identity: bytes, msg: msgspec.Struct) -> None:
        self.messages.append((identity, msg))

    def outputs(self, identity: bytes) -> list[wire.RequestOutput]:
        return [
            item
            for who, msg in self.messages
            if who == identity and isinstance(msg, wire.Outputs)
            for item in msg.items
        ]


def publisher_with(sent: Sent, *owners: tuple[str, bytes]) -> OutputPublisher:
    publisher = OutputPublisher(sent)
    for rid, identity in owners:
        publisher.adopt(rid, identity, prompt_len=3)
    return publisher


def generate(rid: str, prompt: list[int], max_tokens: int = 4) -> wire.Generate:
    return wire.Generate(
        request_id=rid, prompt_token_ids=prompt, sampling=wire.SamplingSpec(max_tokens=max_tokens)
    )
