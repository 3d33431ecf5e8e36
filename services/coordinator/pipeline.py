"""The coordinator's end of the stage chain: sends step plans, matches results to steps.

Each chain the coordinator builds gets a new generation number; every step
and every result carries it, so a stage that comes back after being declared
dead can never deliver a stale result. The engine thread calls submit(),
configure() and attach(); the I/O thread calls resolve(), configured(),
break_chain() and offer(). A lock guards the shared maps.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import zmq

from services.coordinator.micro_batch_control import TimeAverage
from shared import codec, wire
from shared.curve import CurveOptions, is_loopback
from shared.settings import TransportSettings
from shared.sockets import make_socket
from shared.step_phases import observe

log = logging.getLogger("layerbus.coordinator")


class PipelineFailed(RuntimeError):
    """A stage failed a step, or no chain could be built; the affected requests end."""


class ChainBroken(PipelineFailed):
    """A stage of the chain died; in-flight steps are lost and the chain must be rebuilt."""


SendToStage = Callable[[bytes, Any], None]


@dataclass
class _Pending:
    future: Future[Any]
    sent_at: float
    tokens: int


class PipelineLink:
    """Step futures and the DEALER to the first stage (see module docstring for threads)."""

    def __init__(self, ctx: zmq.Context, transport: TransportSettings) -> None:  # type: ignore[type-arg]
        self.ctx = ctx
        self.transport = transport
        self.first: zmq.Socket | None = None  # type: ignore[type-arg]
        self.chain: list[Any] = []
        self.send_to_stage: SendToStage | None = None
        # Random start: a restarted coordinator never reuses a generation a stage knows.
        self.generation = random.randrange(1, 1 << 40)
        self._lock = threading.Lock()
        self._next_step = 1
        self._pending: dict[int, _Pending] = {}
        self._configured: dict[str, Future[wire.Configured]] = {}
        self.broken_at = 0.0  # when the chain last broke (monotonic)
        self.kv_configs: dict[tuple[int, int], Any] = {}
        self.kv_layout = ""
        self.failure: str | None = None  # no chain within the recovery timeout
        # The stage that refused (or never answered) its Configure, for the caller to drop.
        self.refused: str | None = None
        self.broken: str | None = None  # a chain stage died: rebuild and resume
        self.wants_chain = False
        self._offer: list[Any] | None = None
        self.max_in_flight = 0
        # Send -> result time of steps with tokens, smoothed (written by the I/O thread).
        self.round_trip_ms = 0.0
        # Micro-batches (steps with tokens) in flight, averaged over time (under the lock).
        self._in_flight_level = TimeAverage(time.monotonic())
        self.steps_sent = 0
        self.empty_steps_sent = 0
        # Steps that failed on the way (I/O thread); the engine thread tells the first stage.
        self._failed_steps: list[int] = []
        # CURVE client options for a connection to a stage (set by the server).
        self.curve_for: Callable[[Any], CurveOptions | None] = lambda record: None

    # ------------------------------------------------------------ engine thread

    def attach(self, chain: list[Any], send_to_stage: SendToStage) -> None:
        """Adopt an ordered chain of StageRecords under a new generation."""
        with self._lock:
            self.chain = list(chain)
            self.generation += 1
        self.send_to_stage = send_to_stage
        if self.first is not None:
            self.first.close(linger=0)
        self.first = make_socket(
            self.ctx, zmq.DEALER, self.transport, curve=self.curve_for(chain[0])
        )
        self.first.connect(chain[0].info.data_address)
        self.failure = None

    def configure(
        self,
        configs: list[Any],
        layout: str,
        timeout: float,
        live_request_ids: list[str] | None = None,
    ) -> None:
        """Send each stage its KV cache config and wait until it has allocated it.

        Last stage first, one at a time: a stage learns in its Configure which key
        its upstream neighbour dials with (CURVE), so it must know it before that
        neighbour, configured next, connects; a refused handshake would lose the
        first activations sent over it.
        """
        from shared.vllm_bridge.kv_codec import encode_kv

        assert self.send_to_stage is not None
        self.kv_layout = layout
        deadline = time.monotonic() + timeout
        stages = list(enumerate(zip(self.chain, configs, strict=True)))
        self.refused = None
        for index, (record, config) in reversed(stages):
            if self.broken is not None:  # a stage died meanwhile: no chain to configure
                raise PipelineFailed(self.broken)
            self.kv_configs[record.layers] = config
            future: Future[wire.Configured] = Future()
            with self._lock:
                self._configured[record.name] = future
            nxt = self.chain[index + 1].info.data_address if index + 1 < len(self.chain) else ""
            last = index == len(self.chain) - 1
            ring = self.chain[0].info.data_address if last and len(self.chain) > 1 else ""
            if ring:
                warn_unreachable_ring(self.chain[0], record)
            msg = wire.Configure(
                ring_address=ring,
                kv_cache_config=encode_kv(config),
                kv_cache_layout=layout,
                next_address=nxt,
                stage_index=index,
                num_stages=len(self.chain),
                generation=self.generation,
                live_request_ids=list(live_request_ids or []),
            )
            self.send_to_stage(record.identity, msg)
            try:
                reply = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self.refused = record.name
                raise PipelineFailed(
                    f"{record.name} did not allocate its KV cache within {timeout:.0f} s; "
                    "check its log, or raise LAYERBUS_CONFIGURE_TIMEOUT_S"
                ) from None
            if reply.error:
                if reply.name:  # the stage's own answer; a break answers for a dead one
                    self.refused = record.name
                raise PipelineFailed(f"{record.name} could not configure: {reply.error}")
            record.state = "configured"
            record.num_blocks = reply.num_blocks

    def reconfigure(self, chain: list[Any], timeout: float, live_request_ids: list[str]) -> None:
        """Rebuild with a new chain whose layer ranges the first chain had."""
        missing = [r.layers for r in chain if r.layers not in self.kv_configs]
        if missing:
            raise PipelineFailed(f"no KV cache config for layer ranges {missing}")
        assert self.send_to_stage is not None
        self.attach(chain, self.send_to_stage)
        configs = [self.kv_configs[r.layers] for r in chain]
        self.configure(configs, self.kv_layout, timeout, live_request_ids)

    def new_step_id(self) -> int:
        """The id of the next step (its plan names the steps it takes tokens from)."""
        with self._lock:
            step_id = self._next_step
            self._next_step += 1
        return step_id

    def submit(self, plan: wire.StepPlan, step_id: int | None = None) -> Future[Any]:
        """Send one step down the chain; the future resolves to its StepResult."""
        if step_id is None:
            step_id = self.new_step_id()
        future: Future[Any] = Future()
        broken = self.broken
        if broken is not None:
            future.set_exception(ChainBroken(broken))
            return future
        if self.failure is not None:
            future.set_exception(PipelineFailed(self.failure))
            return future
        with self._lock:
            tokens = plan.total_num_scheduled_tokens
            self._pending[step_id] = _Pending(future, time.monotonic(), tokens)
            busy = self._busy()
            self.max_in_flight = max(self.max_in_flight, busy)
            self._in_flight_level.set(busy, time.monotonic())
            generation = self.generation
        assert self.first is not None
        started = time.perf_counter()
        step = wire.Step(step_id=step_id, plan=plan, tensors=[], generation=generation)
        self.first.send_multipart(codec.encode(step))
        observe("coordinator", "send", time.perf_counter() - started)
        self.steps_sent += 1
        if tokens == 0:
            self.empty_steps_sent += 1
        return future

    def release_failed_steps(self) -> None:
        """Tell the first stage which steps will never send it tokens (engine thread)."""
        with self._lock:
            failed, self._failed_steps = self._failed_steps, []
            generation = self.generation
        if self.first is None or len(self.chain) < 2:
            return
        for step_id in failed:
            msg = wire.Tokens(step_id=step_id, generation=generation, failed=True)
            self.first.send_multipart(codec.encode(msg))

    def is_in_flight(self, step_id: int) -> bool:
        """True if step_id was sent and has no result yet (any thread)."""
        with self._lock:
            return step_id in self._pending

    def in_flight(self) -> tuple[int, int]:
        """(steps in flight, of which carry tokens)."""
        with self._lock:
            return len(self._pending), self._busy()

    def _busy(self) -> int:
        """Steps carrying tokens in flight (caller holds the lock)."""
        return sum(1 for p in self._pending.values() if p.tokens > 0)

    def take_in_flight_average(self) -> float:
        """Micro-batches in flight, averaged over time since the last call (any thread)."""
        with self._lock:
            return self._in_flight_level.take(time.monotonic())

    def take_offer(self) -> list[Any] | None:
        with self._lock:
            offer, self._offer = self._offer, None
        return offer

    def request_chain(self) -> None:
        """Ask the I/O thread to offer the next complete chain of live stages."""
        with self._lock:
            self._offer = None
            self.wants_chain = True

    def forget_chain(self) -> None:
        """The engine did not start on this chain: back to no chain, for the next start."""
        self.break_chain("the engine did not start on this chain")
        with self._lock:
            self.chain = []
            self._offer = None
            self.wants_chain = False
        self.kv_configs.clear()
        self.broken = None
        self.failure = None
        self.refused = None

    def close(self) -> None:
        if self.first is not None:
            self.first.close(linger=0)
            self.first = None

    # ------------------------------------------------------------ I/O thread

    def is_current_last(self, name: str) -> bool:
        """Whether `name` is the last stage of the current chain (who may send results)."""
        with self._lock:
            return bool(self.chain) and self.chain[-1].name == name

    def resolve(self, result: wire.StepResult) -> bool:
        """Settle a step; False if the result is stale or unknown (and was ignored)."""
        with self._lock:
            if result.generation != self.generation:
                return False
            pending = self._pending.pop(result.step_id, None)
            if pending is not None and pending.tokens > 0:
                self._in_flight_level.set(self._busy(), time.monotonic())
        if pending is None:
            return False
        if result.error:
            # The stages are alive: fail the requests in flight, keep serving. The
            # first stage must not wait for tokens this step will never sample.
            with self._lock:
                self._failed_steps.append(result.step_id)
            self.fail_all(result.error, broken=False)
            pending.future.set_exception(PipelineFailed(result.error))
        else:
            if pending.tokens > 0:
                sample = (time.monotonic() - pending.sent_at) * 1000
                previous = self.round_trip_ms
                self.round_trip_ms = sample if not previous else 0.8 * previous + 0.2 * sample
            pending.future.set_result(result)
        return True

    def oldest_step_age(self, now: float) -> float:
        """Seconds the oldest step in flight has waited for its result (0 if none)."""
        with self._lock:
            if not self._pending:
                return 0.0
            return now - min(p.sent_at for p in self._pending.values())

    def configured(self, reply: wire.Configured) -> None:
        with self._lock:
            future = self._configured.pop(reply.name, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def offer(self, chain: list[Any]) -> None:
        """A complete chain of live stages is available for a rebuild."""
        with self._lock:
            if self.wants_chain:
                self._offer = list(chain)
                self.wants_chain = False

    def break_chain(self, reason: str) -> None:
        """A stage of the current chain is gone: steps in flight are lost, rebuild."""
        if self.broken is None:
            self.broken_at = time.monotonic()
        self.broken = reason
        self._fail_pending(ChainBroken(reason))
        with self._lock:
            configuring = list(self._configured.values())
            self._configured.clear()
        for future in configuring:
            if not future.done():
                future.set_result(wire.Configured(name="", num_blocks=0, error=reason))

    def fail_all(self, reason: str, broken: bool = True) -> None:
        """Fail every step in flight; broken also refuses new steps until recovery."""
        if broken:
            self.failure = reason
        self._fail_pending(PipelineFailed(reason))

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(error)


def warn_unreachable_ring(first: Any, last: Any) -> None:
    """The last stage sends tokens straight to the first: a loopback address it cannot reach.

    A first stage on loopback (the default --bind) is reachable only from its own host;
    a last stage elsewhere would never deliver its tokens, and every step would wait.
    """
    if is_loopback(first.info.data_address) and not is_loopback(last.info.data_address):
        log.error(
            "the token ring cannot reach %s: it listens on %s (loopback) but the last stage "
            "%s is at %s, on another host; start %s with --bind (or --advertise) on an "
            "address other hosts reach",
            first.name,
            first.info.data_address,
            last.name,
            last.info.data_address,
            first.name,
        )
