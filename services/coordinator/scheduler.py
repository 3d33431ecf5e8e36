"""vLLM's scheduler, one micro-batch at a time (plugged in through `scheduler_cls`).

vLLM's own Scheduler does all the work: KV cache manager, chunked prefill,
prefix caching, preemption. Before each `schedule()` this subclass narrows
`running` to the micro-batch whose turn it is (services/coordinator/
micro_batches.py picks it) and caps admissions at that micro-batch's fair
share; afterwards it merges the lists back. Each micro-batch keeps its own
"scheduled in its previous step" set, so vLLM does not resend whole token
histories just because the previous engine step belonged to another
micro-batch.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from services.coordinator.micro_batches import MicroBatches
from shared.step_phases import timed


class MicroBatchScheduler(Scheduler):
    """Round-robin micro-batches over vLLM's Scheduler; called on the engine thread only.

    With async scheduling the bound class also derives from vLLM's AsyncScheduler
    (tokens in flight are placeholders; see services/coordinator/token_sources.py).
    """

    num_micro_batches = 1
    max_micro_batches = 1

    @classmethod
    def bind(
        cls, num_micro_batches: int, max_micro_batches: int = 0, async_scheduling: bool = False
    ) -> type[MicroBatchScheduler]:
        """A subclass with M and its cap fixed (vLLM instantiates the scheduler class itself)."""
        attrs = {
            "num_micro_batches": num_micro_batches,
            "max_micro_batches": max(num_micro_batches, max_micro_batches),
        }
        bases: tuple[type, ...] = (cls, AsyncScheduler) if async_scheduling else (cls,)
        return type("BoundMicroBatchScheduler", bases, attrs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.micro = MicroBatches(self.num_micro_batches, self.max_micro_batches)
        self._prev_by_group: list[set[str]] = [set() for _ in range(self.micro.capacity)]
        self._group_of_step: dict[int, int] = {}
        self.steps = 0
        self.empty_steps = 0

    def schedule(self, throttle_prefills: bool = False) -> Any:
        with timed("coordinator", "schedule"):
            return self._schedule(throttle_prefills)

    def _schedule(self, throttle_prefills: bool) -> Any:
        everyone = self.running
        ids = [r.request_id for r in everyone]
        self.micro.forget_finished(ids)
        group = self.micro.next_group()
        mine_ids = set(self.micro.members(group, ids))
        # A structured-output request waits for its tokens in flight: its grammar mask
        # must follow the previous token, and with 2 x M steps queued EngineCore's deferred
        # sampling would only wait for the oldest step, not for that request's.
        mine_ids -= {
            r.request_id
            for r in everyone
            if r.request_id in mine_ids and r.use_structured_output and r.num_output_placeholders
        }
        cap = self.micro.admission_cap(group, ids, len(self.waiting), self.max_num_running_reqs)
        saved_cap = self.max_num_active_reqs
        self.running = [r for r in everyone if r.request_id in mine_ids]
        self.max_num_active_reqs = cap
        self.prev_step_scheduled_req_ids = self._prev_by_group[group]
        try:
            output = super().schedule(throttle_prefills)
        finally:
            after = self.running
            kept = {id(r) for r in after}
            merged = [r for r in everyone if r.request_id not in mine_ids or id(r) in kept]
            seen = {id(r) for r in merged}
            merged.extend(r for r in after if id(r) not in seen)
            self.running = merged
            self.max_num_active_reqs = saved_cap
        self.micro.assign(group, (r.request_id for r in after))
        self.micro.started(group)
        self._group_of_step[id(output)] = group
        self.steps += 1
        if output.total_num_scheduled_tokens == 0:
            self.empty_steps += 1
        return output

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        group = self._group_of_step.pop(id(scheduler_output), None)
        if group is not None:
            self.micro.finished(group)
        with timed("coordinator", "update"):
            return super().update_from_output(scheduler_output, model_runner_output)

    def micro_batch_sizes(self) -> list[int]:
        return self.micro.sizes(r.request_id for r in self.running)

    def restart_all(self) -> None:
        """The chain was rebuilt: every running request recomputes through vLLM's preemption.

        Steps in flight are lost, so their tokens will never be delivered; the
        requests' in-flight counters are cleared so the recomputed steps count
        as fresh output. The prefix cache goes too: the new stage has none of it.
        """
        self.reset_prefix_cache(reset_running_requests=True)
        for request in self.requests.values():
            request.num_in_flight_tokens = 0
            request.num_stale_output_tokens = 0
            request.drop_stale_output = False
        self._group_of_step.clear()
        self.micro.reset_flight()
        self.micro.forget_finished(())
        for prev in self._prev_by_group:
            prev.clear()
