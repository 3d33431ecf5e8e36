"""shared/vllm_bridge/step_codec.py: vLLM SchedulerOutput <-> StepPlan, async placeholders included.

Relies on vLLM's async scheduler leaving CachedRequestData.new_token_ids rows
empty under pipeline parallelism (the coordinator fills them from its requests).
"""

from __future__ import annotations

from types import SimpleNamespace

from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput

from shared.vllm_bridge.step_codec import (
    PLACEHOLDER,
    cached_token_ids,
    plan_from_scheduler_output,
    scheduler_output_from_plan,
)


def output(computed: dict[str, int], scheduled: dict[str, int]) -> SchedulerOutput:
    out = SchedulerOutput.make_empty()
    ids = list(computed)
    out.scheduled_cached_reqs = CachedRequestData(
        req_ids=ids,
        resumed_req_ids=set(),
        new_token_ids=[[] for _ in ids],  # what vLLM's async scheduler leaves
        all_token_ids={"a": [1, 2, 3]},
        new_block_ids=[None] * len(ids),
        num_computed_tokens=[computed[r] for r in ids],
        num_output_tokens=[1] * len(ids),
    )
    out.num_scheduled_tokens = dict(scheduled)
    out.total_num_scheduled_tokens = sum(scheduled.values())
    return out


REQUESTS = {
    "a": SimpleNamespace(all_token_ids=[10, 11, 12, 13]),  # 4 known tokens
    "b": SimpleNamespace(all_token_ids=[20, 21, 22, 23, 24, 25]),
}


def test_tokens_in_flight_become_placeholders_and_known_ones_travel() -> None:
    so = output({"a": 4, "b": 2}, {"a": 1, "b": 3})
    rows = cached_token_ids(so, REQUESTS)
    assert rows == [[PLACEHOLDER], [22, 23, 24]]  # a's token is sampled by a step in flight


def test_a_row_running_past_the_known_tokens_ends_in_placeholders() -> None:
    so = output({"a": 3}, {"a": 2})
    assert cached_token_ids(so, REQUESTS) == [[13, PLACEHOLDER]]


def test_without_requests_vllm_rows_are_kept() -> None:
    so = output({"a": 3}, {"a": 1})
    so.scheduled_cached_reqs.new_token_ids = [[13]]
    assert cached_token_ids(so) == [[13]]


def test_histories_travel_only_when_asked_and_the_plan_round_trips() -> None:
    so = output({"a": 4}, {"a": 1})
    assert plan_from_scheduler_output(so, REQUESTS).cached.all_token_ids == {}
    plan = plan_from_scheduler_output(so, REQUESTS, histories=True)
    assert plan.cached.all_token_ids == {"a": [1, 2, 3]}
    back = scheduler_output_from_plan(plan)
    assert back.scheduled_cached_reqs.new_token_ids == [[PLACEHOLDER]]
    assert back.num_scheduled_tokens == {"a": 1}
