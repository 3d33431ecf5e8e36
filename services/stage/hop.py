"""The stage's activation hop: a step in, this stage's layers run, the result on.

A Step (plan + hidden states as raw frames) arrives on the activation ROUTER
from the previous stage (or the coordinator, for the first). The first stage
of a chain of two or more holds each plan until the tokens it still lacks
have come round the token ring from the last stage (token_ring.py). A middle
stage sends its output to the next hop; the last sends the sampled tokens
round the ring to the first stage, then the StepResult to the coordinator.
A step this stage cannot run is reported failed, so its requests end.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from services.stage.links import NextHop, RingLink
from services.stage.membership import Membership
from services.stage.metrics import StageMetrics
from services.stage.output_waiter import OutputWaiter
from services.stage.plan_validation import (
    PlanRefused,
    check_plan,
    check_tensors,
    check_tokens,
    max_activation_elements,
)
from services.stage.step_stats import StepStats
from services.stage.token_ring import RingError, TokenRing
from services.stage.worker import StageWorker
from shared import codec, curve, wire
from shared.dropped import drop
from shared.step_phases import observe, timed
from shared.tensor_frames import HostStaging, frames_to_tensors, tensors_to_frames
from shared.vllm_bridge.grammar_codec import grammar_output_from_mask
from shared.vllm_bridge.step_codec import (
    result_from_runner_output,
    resumed_from_plan,
    scheduler_output_from_plan,
)

log = logging.getLogger("layerbus.stage")

# What the first stage keeps with a plan waiting for ring tokens:
# the Step, its frames, its decoded tensors, when it was queued (perf_counter).
Waiting = tuple[wire.Step, list[Any], Any, float]


class ActivationHop:
    """Steps and ring tokens in, forward on the worker, activations or results out; main thread."""

    def __init__(
        self,
        name: str,
        worker: StageWorker,
        chain: Membership,
        control: zmq.Socket,  # type: ignore[type-arg]  # the DEALER to the coordinator
        next_hop: NextHop,
        ring_link: RingLink,
        metrics: StageMetrics,
        stats: StepStats,
        results: zmq.Socket | None = None,  # type: ignore[type-arg]
    ) -> None:
        """results: a DEALER to the coordinator for the async runner's output thread
        (a whole-model GPU stage); None: results go out on `control` from this thread."""
        self.name = name
        self.worker = worker
        self.chain = chain
        self.control = control
        self.next_hop = next_hop
        self.ring_link = ring_link
        self.metrics = metrics
        self.stats = stats
        # Steps sampled by the async runner whose tokens are still on their way to the host.
        self.results = results
        self.outputs: OutputWaiter[wire.Step] | None = None
        if results is not None:
            self.outputs = OutputWaiter(StageWorker.resolve_output, self.deliver)
        self.staging = HostStaging()
        # The token ring: plans waiting at the first stage for the last stage's tokens.
        self.ring: TokenRing[Waiting] = TokenRing()
        self.ring_fed = False

    # ------------------------------------------------------------ wiring (from Configure/Reset)

    def open_next(self, address: str, key: str) -> None:
        """(Re)connect to the next hop ("" : none, the last stage or a standby)."""
        self.next_hop.open(address, key)

    def open_ring(self, generation: int, fed: bool, address: str, key: str) -> None:
        """The token ring of a chain: does this stage wait for tokens, where does it send them.

        Plans waiting for tokens of the previous chain are dropped: their requests
        resume in the new one (or elsewhere, for a stage reset to standby).
        """
        self.ring_fed = fed
        dropped = self.ring.reset(generation)
        if dropped:
            log.info("%s: dropped %d plans of an earlier chain", self.name, len(dropped))
        self.ring_link.open(address, key)

    # ------------------------------------------------------------ in

    def on_data(self, frames: list[Any]) -> None:
        """One message on the activation ROUTER: a Step, or Tokens round the ring."""
        # frames[0] is the ROUTER identity of the sender.
        arrived = time.perf_counter()
        try:
            header = codec.decode(frames[1:3])
            if not isinstance(header, wire.Step | wire.Tokens):
                raise wire.WireError(f"expected Step or Tokens, got {type(header).__name__}")
        except wire.WireError as err:
            drop("stage-data", "malformed", str(err))
            return
        if isinstance(header, wire.Tokens):
            self.on_tokens(header, frames)
            return
        refusal = self.chain.step_refusal(header, self._sender(frames))
        if refusal is not None:
            # Not from the upstream hop, or stale (an earlier chain's step, or one for
            # a standby: its requests were resumed elsewhere): dropped, never run.
            drop("stage-data", *refusal)
            return
        limits = self.chain.limits
        assert limits is not None  # step_refusal refuses steps before Configure
        try:
            check_tensors(header.tensors, limits)
            check_plan(header.plan, limits)
            elements = max_activation_elements(limits)
            tensors = frames_to_tensors(header.tensors, frames[3:], elements)
        except (PlanRefused, wire.WireError) as err:
            drop("stage-data", "invalid", f"step {header.step_id}: {err}")
            self.fail_step(header.step_id, f"refused an invalid step: {err}")
            return
        observe("stage", "decode", time.perf_counter() - arrived)
        if self.ring_fed:
            # The first stage of a chain of two or more: the plan may wait here for
            # the tokens the last stage has yet to send round the ring.
            self.ring.push(header.plan, (header, frames, tensors, time.perf_counter()))
            self.run_ready()
            return
        self.run_step(header, frames, tensors)

    def on_tokens(self, msg: wire.Tokens, frames: list[Any]) -> None:
        """Sampled tokens from the last stage (or a failed step named by the coordinator)."""
        refusal = self.chain.tokens_refusal(msg, self._sender(frames), self.ring_fed)
        if refusal is not None:
            drop("stage-data", *refusal)
            return
        assert self.chain.limits is not None  # tokens_refusal refuses them before Configure
        try:
            check_tokens(msg, self.chain.limits)
        except PlanRefused as err:
            drop("stage-data", "invalid", f"ring tokens of step {msg.step_id}: {err}")
            return
        if not self.ring.add_tokens(msg):
            drop(
                "stage-data",
                "stale",
                f"ring tokens of step {msg.step_id} of generation {msg.generation} "
                f"(this stage: {self.ring.generation})",
            )
            return
        self.run_ready()

    def _sender(self, frames: list[Any]) -> str | None:
        """The CURVE key that sent these frames (None without CURVE)."""
        return curve.user_id(frames[-1]) if self.chain.secure else None

    # ------------------------------------------------------------ run

    def run_ready(self) -> None:
        """Run every waiting plan whose tokens have all arrived, oldest first."""
        while True:
            try:
                ready = self.ring.pop_ready()
            except RingError as err:  # a plan and its tokens disagree: a bug, not a peer
                log.error("%s: %s", self.name, err)
                self.metrics.ring_waiting(self.ring.waiting())
                return
            if ready is None:
                self.metrics.ring_waiting(self.ring.waiting())
                return
            _, (header, frames, tensors, queued) = ready
            observe("stage", "ring_wait", time.perf_counter() - queued)
            self.run_step(header, frames, tensors)

    def run_step(self, header: wire.Step, frames: list[Any], tensors: Any) -> None:
        """Run one valid step on this stage's layers and pass the result on."""
        self.next_hop.wait_for_sends()
        started = time.monotonic()
        try:
            scheduler_output = scheduler_output_from_plan(header.plan)
            self.worker.adopt(resumed_from_plan(header.plan))
            grammar = None
            if self.worker.is_last and header.plan.grammar is not None:
                grammar = grammar_output_from_mask(header.plan.grammar)
            out_tensors, runner_output = self.worker.run(scheduler_output, tensors or None, grammar)
        except Exception as err:  # the coordinator fails this step's requests
            log.exception("%s: step %d failed", self.name, header.step_id)
            if self.ring_fed:
                self.ring.step_failed(header.step_id)
            self.fail_step(header.step_id, f"{type(err).__name__}: {err}")
            return
        finally:
            elapsed = time.monotonic() - started
            self.stats.record(elapsed)
            self.metrics.step(elapsed, frames[1:])
            observe("stage", "forward", elapsed)
        with timed("stage", "forward_send"):
            self.pass_on(header, out_tensors, runner_output)

    # ------------------------------------------------------------ out

    def pass_on(self, header: wire.Step, out_tensors: Any, runner_output: Any) -> None:
        """A step's output to the next stage, or its sampled tokens out of the last."""
        if self.worker.is_last:
            if self.outputs is not None:
                # Its tokens are still being copied to the host; the next step may
                # start meanwhile. The output thread sends the result.
                self.outputs.put(header, runner_output)
                return
            self.send_result(header, runner_output)
            return
        if not self.next_hop.connected:
            log.error("%s: not the last stage but has no next hop", self.name)
            return
        # Steps with no scheduled tokens still travel on: later stages must
        # see their finished/preempted requests.
        metas, buffers = tensors_to_frames(out_tensors or {}, self.staging)
        step = wire.Step(
            step_id=header.step_id, plan=header.plan, tensors=metas, generation=header.generation
        )
        sent_at, out = time.monotonic(), [*codec.encode(step), *buffers]
        tracker = self.next_hop.send(out)
        self.metrics.sent(out, tracker, sent_at)

    def deliver(self, header: wire.Step, runner_output: Any, error: BaseException | None) -> None:
        """Output thread: an async-runner step's result, or its failure, to the coordinator.

        On the thread's own socket (`results`). A stage with the async runner holds the
        whole model, so it has no token ring to feed.
        """
        assert self.results is not None
        if error is None:
            msg = result_from_runner_output(header.step_id, runner_output)
            msg.generation = header.generation
        else:
            log.error("%s: step %d failed: %s", self.name, header.step_id, error)
            msg = self.failure(header.step_id, f"{type(error).__name__}: {error}")
            msg.generation = header.generation
        sent_at, out = time.monotonic(), codec.encode(msg)
        self.results.send_multipart(out)
        self.metrics.sent(out, None, sent_at)

    def send_result(self, header: wire.Step, runner_output: Any) -> None:
        """Last stage: the step's sampled tokens round the ring and to the coordinator."""
        result = result_from_runner_output(header.step_id, runner_output)
        result.generation = header.generation
        if self.ring_link.active:
            # Round the ring first: the first stage is waiting for these tokens;
            # the coordinator only streams them and plans further ahead.
            tokens = wire.Tokens(
                step_id=header.step_id,
                generation=header.generation,
                req_ids=result.req_ids,
                sampled_token_ids=result.sampled_token_ids,
            )
            self.ring_link.send(tokens)
        sent_at, out = time.monotonic(), codec.encode(result)
        self.control.send_multipart(out)
        self.metrics.sent(out, None, sent_at)

    def fail_step(self, step_id: int, error: str) -> None:
        """Tell the coordinator this step failed, so its requests end instead of hanging."""
        self.control.send_multipart(codec.encode(self.failure(step_id, error)))

    def failure(self, step_id: int, error: str) -> wire.StepResult:
        return wire.StepResult(
            step_id=step_id,
            req_ids=[],
            sampled_token_ids=[],
            error=f"{self.name}: {error}",
            generation=self.chain.generation,
        )

    def close(self) -> None:
        """Stop the output thread and close the outgoing sockets (the main thread, at exit)."""
        if self.outputs is not None:
            self.outputs.close()
        if self.results is not None:
            self.results.close(linger=0)
        self.next_hop.close()
        self.ring_link.close()
