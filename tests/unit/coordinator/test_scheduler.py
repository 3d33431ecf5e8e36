"""services/coordinator/scheduler.py: one micro-batch per step over vLLM's Scheduler.

vLLM's own schedule() is replaced by a recorder, so the narrowing and merging
are tested alone; the last tests check by name the Scheduler and Request
internals the subclass relies on.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from services.coordinator.micro_batches import MicroBatches
from services.coordinator.scheduler import MicroBatchScheduler


def request(rid: str, structured: bool = False, placeholders: int = 0) -> Any:
    return SimpleNamespace(
        request_id=rid, use_structured_output=structured, num_output_placeholders=placeholders
    )


class VllmSchedule:
    """Stands in for vLLM's Scheduler.schedule: records what it saw, admits `admit`."""

    def __init__(self) -> None:
        self.saw: list[tuple[list[str], int, set[str]]] = []
        self.admit: list[Any] = []

    def __call__(self, sched: Any, throttle_prefills: bool = False) -> SchedulerOutput:
        running = [r.request_id for r in sched.running]
        self.saw.append((running, sched.max_num_active_reqs, sched.prev_step_scheduled_req_ids))
        sched.running = sched.running + self.admit
        # vLLM records this step's requests in the set it holds, in place.
        sched.prev_step_scheduled_req_ids.clear()
        sched.prev_step_scheduled_req_ids.update(running + [r.request_id for r in self.admit])
        self.admit = []
        out = SchedulerOutput.make_empty()
        out.total_num_scheduled_tokens = len(sched.running)
        return out


def scheduler(
    monkeypatch: pytest.MonkeyPatch, m: int, running: list[Any]
) -> tuple[Any, VllmSchedule]:
    vllm_schedule = VllmSchedule()
    monkeypatch.setattr(
        Scheduler, "schedule", lambda self, throttle=False: vllm_schedule(self, throttle)
    )
    sched: Any = object.__new__(MicroBatchScheduler.bind(m, m))
    sched.running = running
    sched.waiting = []
    sched.max_num_running_reqs = 16
    sched.max_num_active_reqs = 16
    sched.prev_step_scheduled_req_ids = set()
    sched.micro = MicroBatches(m, m)
    sched._prev_by_group = [set() for _ in range(m)]
    sched._group_of_step = {}
    sched.steps = sched.empty_steps = 0
    return sched, vllm_schedule


def test_each_step_schedules_one_micro_batch_and_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, c, d = (request(x) for x in "abcd")
    sched, vllm = scheduler(monkeypatch, 2, [a, b, c, d])
    sched.micro.assign(0, ["a", "c"])
    sched.micro.assign(1, ["b", "d"])
    sched.schedule()
    sched.schedule()
    assert [saw[0] for saw in vllm.saw] == [["a", "c"], ["b", "d"]]
    assert [r.request_id for r in sched.running] == ["a", "b", "c", "d"]
    assert sched.micro.in_flight == [1, 1] and sched.steps == 2
    assert sched.max_num_active_reqs == 16  # the cap narrows only during vLLM's schedule()


def test_admitted_requests_join_the_micro_batch_whose_turn_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = request("a"), request("b")
    sched, vllm = scheduler(monkeypatch, 2, [a, b])
    sched.micro.assign(0, ["a"])
    sched.micro.assign(1, ["b"])
    vllm.admit = [request("new")]
    sched.schedule()
    assert [r.request_id for r in sched.running] == ["a", "b", "new"]
    assert sched.micro.group_of["new"] == 0 and sched.micro_batch_sizes() == [2, 1]


def test_each_micro_batch_keeps_its_own_previous_step(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = request("a"), request("b")
    sched, vllm = scheduler(monkeypatch, 2, [a, b])
    sched.micro.assign(0, ["a"])
    sched.micro.assign(1, ["b"])
    sched.schedule()
    sched.schedule()
    sched.micro.reset_flight()
    sched.schedule()  # micro-batch 0 again: vLLM sees what 0 ran, not what 1 ran
    assert vllm.saw[2][2] == {"a"} and vllm.saw[2][2] is sched._prev_by_group[0]


def test_a_structured_request_waits_while_its_tokens_are_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting_for_token = request("json", structured=True, placeholders=1)
    sched, vllm = scheduler(monkeypatch, 1, [request("a"), waiting_for_token])
    sched.schedule()
    assert vllm.saw[0][0] == ["a"]
    assert [r.request_id for r in sched.running] == ["a", "json"]


def test_a_step_coming_back_frees_its_micro_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    sched, _ = scheduler(monkeypatch, 2, [request("a")])
    monkeypatch.setattr(Scheduler, "update_from_output", lambda self, so, mro: {})
    out = sched.schedule()
    assert sched.micro.in_flight == [1, 0]
    sched.update_from_output(out, None)
    assert sched.micro.in_flight == [0, 0]


# ------------------------------------------------------------ vLLM internals, by name


def test_schedule_updates_the_previous_step_set_in_place() -> None:
    text = inspect.getsource(Scheduler.schedule)
    assert "self.prev_step_scheduled_req_ids.clear()" in text and (
        "self.prev_step_scheduled_req_ids.update(" in text
    ), (
        "vLLM's Scheduler.schedule no longer updates prev_step_scheduled_req_ids in place; "
        "MicroBatchScheduler hands it one set per micro-batch and relies on that"
    )


def test_schedule_caps_admissions_at_max_num_active_reqs() -> None:
    text = inspect.getsource(Scheduler.schedule)
    assert ">= self.max_num_active_reqs" in text, (
        "vLLM's Scheduler.schedule no longer caps admissions at max_num_active_reqs; "
        "MicroBatchScheduler narrows it to a micro-batch's fair share"
    )
    assert "self.max_num_active_reqs =" in inspect.getsource(Scheduler.__init__)


def test_reset_prefix_cache_can_preempt_every_running_request() -> None:
    params = inspect.signature(Scheduler.reset_prefix_cache).parameters
    assert "reset_running_requests" in params, (
        "vLLM's Scheduler.reset_prefix_cache(reset_running_requests=True) is gone; "
        "MicroBatchScheduler.restart_all recomputes running requests through it after a rebuild"
    )
    text = inspect.getsource(Scheduler.reset_prefix_cache)
    assert "_preempt_request(" in text, "reset_prefix_cache no longer preempts running requests"


def test_request_has_the_in_flight_counters_restart_all_clears() -> None:
    init = inspect.getsource(Request.__init__)
    for name in ("num_in_flight_tokens", "num_stale_output_tokens", "drop_stale_output"):
        assert f"self.{name} =" in init, (
            f"vLLM's Request lost {name} (services/coordinator/scheduler.py:restart_all)"
        )
    assert hasattr(Request, "use_structured_output"), (
        "vLLM's Request lost use_structured_output (MicroBatchScheduler holds such requests back)"
    )


def test_update_from_output_takes_the_scheduler_output_first() -> None:
    params = list(inspect.signature(Scheduler.update_from_output).parameters)
    assert params[:3] == ["self", "scheduler_output", "model_runner_output"], (
        "vLLM's Scheduler.update_from_output(scheduler_output, model_runner_output) changed; "
        "MicroBatchScheduler finds the step's micro-batch by its scheduler_output"
    )
