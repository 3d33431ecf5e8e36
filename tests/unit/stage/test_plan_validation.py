"""Stage-side Step checks: block ids, token ids, sizes and activation shapes."""

from __future__ import annotations

import pytest

from services.stage.plan_validation import PlanLimits, PlanRefused, check_plan, check_tensors
from shared import wire

LIMITS = PlanLimits(
    num_blocks=100,
    num_kv_groups=1,
    block_size=16,
    vocab_size=1000,
    max_model_len=256,
    max_num_seqs=4,
    max_num_batched_tokens=64,
    hidden_size=8,
)


def cached(**overrides: object) -> wire.CachedRequestsPlan:
    fields: dict[str, object] = {
        "req_ids": [],
        "resumed_req_ids": [],
        "new_token_ids": [],
        "all_token_ids": {},
        "new_block_ids": [],
        "num_computed_tokens": [],
        "num_output_tokens": [],
    }
    fields.update(overrides)
    return wire.CachedRequestsPlan(**fields)  # type: ignore[arg-type]


def plan(block: int = 3, token: int = 7, scheduled: int = 3, **overrides: object) -> wire.StepPlan:
    new = wire.NewRequestPlan(
        req_id="a",
        prompt_token_ids=[token, 1, 2],
        sampling_params=b"\x80",
        block_ids=[[block]],
        num_computed_tokens=0,
    )
    fields: dict[str, object] = {
        "new_requests": [new],
        "cached": cached(),
        "num_scheduled_tokens": {"a": scheduled},
        "total_num_scheduled_tokens": scheduled,
        "finished_req_ids": [],
    }
    fields.update(overrides)
    return wire.StepPlan(**fields)  # type: ignore[arg-type]


def test_a_legitimate_plan_passes() -> None:
    check_plan(plan(), LIMITS)
    decode = cached(
        req_ids=["a"],
        new_token_ids=[[5]],
        new_block_ids=[[[4]]],
        num_computed_tokens=[3],
        num_output_tokens=[1],
    )
    check_plan(
        plan(
            new_requests=[],
            cached=decode,
            num_scheduled_tokens={"a": 1},
            **{"total_num_scheduled_tokens": 1},
        ),
        LIMITS,
    )


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (plan(block=10**6), "block id 1000000"),
        (plan(block=-1), "block id -1"),
        (plan(token=5000), "token id 5000"),
        (plan(scheduled=65), "max_num_batched_tokens"),
        (plan(total_num_scheduled_tokens=2), "per-request sum"),
        (plan(num_scheduled_tokens={"zzz": 3}), "does not carry"),
        (plan(new_block_ids_to_zero=[100]), "block to zero 100"),
        (plan(scheduled_spec_decode_tokens={"a": [1]}), "speculative"),
        (
            plan(
                cached=cached(
                    req_ids=["b"],
                    new_token_ids=[[1]],
                    new_block_ids=[[[999]]],
                    num_computed_tokens=[1],
                    num_output_tokens=[0],
                )
            ),
            "block id 999",
        ),
        (plan(cached=cached(req_ids=["b"])), "differ in length"),
    ],
)
def test_out_of_range_values_are_refused(bad: wire.StepPlan, fragment: str) -> None:
    with pytest.raises(PlanRefused, match=fragment):
        check_plan(bad, LIMITS)


def test_wrong_number_of_kv_groups_is_refused() -> None:
    bad = plan()
    bad.new_requests[0].block_ids = [[1], [2]]
    with pytest.raises(PlanRefused, match="KV cache groups"):
        check_plan(bad, LIMITS)


def test_too_many_blocks_for_one_request_is_refused() -> None:
    bad = plan()
    bad.new_requests[0].block_ids = [list(range(LIMITS.max_blocks_per_request + 1))]
    with pytest.raises(PlanRefused):
        check_plan(bad, LIMITS)


def test_activation_frames_must_be_hidden_states_of_the_right_width() -> None:
    check_tensors([wire.TensorMeta("hidden_states", "float32", [3, 8])], LIMITS)
    for meta in (
        wire.TensorMeta("weights", "float32", [3, 8]),
        wire.TensorMeta("hidden_states", "float32", [3, 9]),
        wire.TensorMeta("hidden_states", "float32", [65, 8]),
        wire.TensorMeta("hidden_states", "float32", [3, 8, 1]),
    ):
        with pytest.raises(PlanRefused):
            check_tensors([meta], LIMITS)


def test_a_single_stage_plan_carries_no_sampled_tokens() -> None:
    """One stage (no pipeline parallelism): vLLM leaves new_token_ids empty."""
    plan = wire.StepPlan(
        new_requests=[],
        cached=wire.CachedRequestsPlan(["r"], [], [], {}, [None], [7], [1]),
        num_scheduled_tokens={"r": 1},
        total_num_scheduled_tokens=1,
        finished_req_ids=[],
    )
    check_plan(plan, LIMITS)
