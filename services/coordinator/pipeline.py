"""The coordinator's end of the stage chain: sends step plans, matches results to steps.

The engine thread calls submit() and configure(); the I/O thread calls
resolve(), configured() and fail_all(). A lock guards the shared maps.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from shared import codec, wire
from shared.curve import CurveOptions
from shared.settings import TransportSettings
from shared.sockets import make_socket


class PipelineFailed(RuntimeError):
    """A stage died or failed a step; the affected requests end with this message."""


SendToStage = Callable[[bytes, wire.Configure], None]


class PipelineLink:
    """Step futures and the DEALER to the first stage (see module docstring for threads)."""

    def __init__(self, ctx: zmq.Context, transport: TransportSettings) -> None:  # type: ignore[type-arg]
        self.ctx = ctx
        self.transport = transport
        self.first: zmq.Socket | None = None  # type: ignore[type-arg]
        self.chain: list[Any] = []
        self.send_to_stage: SendToStage | None = None
        self._lock = threading.Lock()
        self._steps = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._sent_at: dict[int, float] = {}
        self._configured: dict[str, Future[wire.Configured]] = {}
        self.failure: str | None = None
        self.max_in_flight = 0
        self.steps_sent = 0
        # CURVE client options for a connection to a stage (set by the server).
        self.curve_for: Callable[[Any], CurveOptions | None] = lambda record: None

    # ------------------------------------------------------------ engine thread

    def attach(self, chain: list[Any], send_to_stage: SendToStage) -> None:
        """Adopt an ordered chain of StageRecords and connect to its first stage."""
        self.chain = chain
        self.send_to_stage = send_to_stage
        if self.first is not None:
            self.first.close()
        self.first = make_socket(
            self.ctx, zmq.DEALER, self.transport, curve=self.curve_for(chain[0])
        )
        self.first.connect(chain[0].info.data_address)
        self.failure = None

    def configure(self, configs: list[Any], layout: str, timeout: float) -> None:
        """Send each stage its KV cache config and wait until all have allocated it."""
        from shared.kv_codec import encode_kv

        assert self.send_to_stage is not None
        waits = []
        for index, (record, config) in enumerate(zip(self.chain, configs, strict=True)):
            future: Future[wire.Configured] = Future()
            with self._lock:
                self._configured[record.name] = future
            nxt = self.chain[index + 1].info.data_address if index + 1 < len(self.chain) else ""
            msg = wire.Configure(
                kv_cache_config=encode_kv(config),
                kv_cache_layout=layout,
                next_address=nxt,
                stage_index=index,
                num_stages=len(self.chain),
            )
            self.send_to_stage(record.identity, msg)
            waits.append((record, future))
        for record, future in waits:
            try:
                reply = future.result(timeout=timeout)
            except TimeoutError:
                raise PipelineFailed(
                    f"{record.name} did not allocate its KV cache within {timeout:.0f} s; "
                    "check its log, or raise LAYERBUS_CONFIGURE_TIMEOUT_S"
                ) from None
            if reply.error:
                raise PipelineFailed(f"{record.name} could not configure: {reply.error}")
            record.state = "configured"
            record.num_blocks = reply.num_blocks

    def submit(self, plan: wire.StepPlan) -> Future[Any]:
        """Send one step down the chain; the future resolves to its StepResult."""
        future: Future[Any] = Future()
        if self.failure is not None:
            future.set_exception(PipelineFailed(self.failure))
            return future
        step_id = next(self._steps)
        with self._lock:
            self._pending[step_id] = future
            self._sent_at[step_id] = time.monotonic()
            self.max_in_flight = max(self.max_in_flight, len(self._pending))
        assert self.first is not None
        step = wire.Step(step_id=step_id, plan=plan, tensors=[])
        self.first.send_multipart(codec.encode(step))
        self.steps_sent += 1
        return future

    def is_in_flight(self, step_id: int) -> bool:
        """True if step_id was sent and has no result yet (any thread)."""
        with self._lock:
            return step_id in self._pending

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        if self.first is not None:
            self.first.close()
            self.first = None

    # ------------------------------------------------------------ I/O thread

    def resolve(self, result: wire.StepResult) -> None:
        with self._lock:
            future = self._pending.pop(result.step_id, None)
            self._sent_at.pop(result.step_id, None)
        if future is None:
            return  # a step of a pipeline that has since failed
        if result.error:
            self.fail_all(result.error)
            future.set_exception(PipelineFailed(result.error))
        else:
            future.set_result(result)

    def oldest_step_age(self, now: float) -> float:
        """Seconds the oldest step in flight has waited for its result (0 if none)."""
        with self._lock:
            return now - min(self._sent_at.values()) if self._sent_at else 0.0

    def configured(self, reply: wire.Configured) -> None:
        with self._lock:
            future = self._configured.pop(reply.name, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def fail_all(self, reason: str, broken: bool = True) -> None:
        """Fail every step in flight; broken also refuses new steps until recovery."""
        if broken:
            self.failure = reason
        with self._lock:
            pending, self._pending = self._pending, {}
            self._sent_at.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(PipelineFailed(reason))
