"""The first stage's end of the token ring (services/stage/token_ring.py)."""

from __future__ import annotations

import pytest

from services.stage.token_ring import KEEP_STEPS, RingError, TokenRing, fill
from shared import wire


def plan(rows: dict[str, list[int]], sources: dict[str, list[int]]) -> wire.StepPlan:
    ids = list(rows)
    return wire.StepPlan(
        new_requests=[],
        cached=wire.CachedRequestsPlan(
            req_ids=ids,
            resumed_req_ids=[],
            new_token_ids=[list(rows[r]) for r in ids],
            all_token_ids={},
            new_block_ids=[None] * len(ids),
            num_computed_tokens=[10] * len(ids),
            num_output_tokens=[1] * len(ids),
        ),
        num_scheduled_tokens={r: len(rows[r]) for r in ids},
        total_num_scheduled_tokens=sum(len(v) for v in rows.values()),
        finished_req_ids=[],
        token_sources=sources,
    )


def tokens(step: int, sampled: dict[str, int], generation: int = 7) -> wire.Tokens:
    return wire.Tokens(
        step_id=step,
        generation=generation,
        req_ids=list(sampled),
        sampled_token_ids=[[t] for t in sampled.values()],
    )


def test_a_plan_waits_for_its_tokens_then_runs_filled() -> None:
    ring: TokenRing[str] = TokenRing()
    ring.reset(7)
    ring.push(plan({"a": [-1], "b": [5]}, {"a": [3]}), "step 4")
    assert ring.pop_ready() is None
    assert ring.add_tokens(tokens(3, {"a": 42, "x": 9}))
    ready = ring.pop_ready()
    assert ready is not None
    filled, item = ready
    assert item == "step 4"
    assert filled.cached.new_token_ids == [[42], [5]]
    assert filled.token_sources == {}  # what travels on is an ordinary plan


def test_plans_run_in_arrival_order_even_when_a_later_one_is_ready() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(7)
    ring.push(plan({"a": [-1]}, {"a": [1]}), 1)
    ring.push(plan({"b": [8]}, {}), 2)
    assert ring.pop_ready() is None  # the second must not overtake the first
    ring.add_tokens(tokens(1, {"a": 11}))
    first, second = ring.pop_ready(), ring.pop_ready()
    assert first is not None and first[1] == 1
    assert second is not None and second[1] == 2
    assert ring.pop_ready() is None


def test_tokens_of_another_chain_are_refused() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(8)
    assert not ring.add_tokens(tokens(1, {"a": 11}, generation=7))
    ring.push(plan({"a": [-1]}, {"a": [1]}), 1)
    assert ring.pop_ready() is None


def test_a_new_chain_drops_waiting_plans_and_tokens() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(7)
    ring.add_tokens(tokens(1, {"a": 11}))
    ring.push(plan({"a": [-1]}, {"a": [2]}), 5)
    assert ring.reset(8) == [5]
    assert ring.waiting() == 0
    ring.push(plan({"a": [-1]}, {"a": [1]}), 6)
    assert ring.pop_ready() is None  # step 1's tokens were of the old chain


def test_a_failed_step_releases_the_plans_behind_it() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(7)
    ring.push(plan({"a": [-1]}, {"a": [3]}), 4)
    ring.add_tokens(wire.Tokens(step_id=3, generation=7, failed=True))
    ready = ring.pop_ready()
    assert ready is not None
    assert ready[0].cached.new_token_ids == [[0]]  # its request was failed anyway


def test_a_step_this_stage_failed_releases_the_plans_behind_it() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(7)
    ring.step_failed(3)
    ring.push(plan({"a": [-1]}, {"a": [3]}), 4)
    assert ring.pop_ready() is not None


def test_two_placeholders_fill_in_source_order() -> None:
    p = plan({"a": [-1, -1]}, {"a": [3, 4]})
    fill(p, {3: {"a": [7]}, 4: {"a": [8]}})
    assert p.cached.new_token_ids == [[7, 8]]


def test_sources_that_do_not_match_the_placeholders_are_an_error() -> None:
    with pytest.raises(RingError, match="placeholders"):
        fill(plan({"a": [5]}, {"a": [3]}), {3: {"a": [7]}})
    with pytest.raises(RingError, match="does not schedule"):
        fill(plan({"a": [-1]}, {"b": [3]}), {3: {"b": [7]}})


def test_old_tokens_are_bounded() -> None:
    ring: TokenRing[int] = TokenRing()
    ring.reset(7)
    for step in range(KEEP_STEPS + 10):
        ring.add_tokens(tokens(step, {"a": 1}))
    ring.push(plan({"a": [-1]}, {"a": [0]}), 1)
    assert ring.pop_ready() is None  # step 0's tokens were dropped long ago
