"""Which in-flight steps fill a plan's placeholders (services/coordinator/token_sources.py)."""

from __future__ import annotations

import pytest

from services.coordinator.token_sources import MissingSource, Row, TokenSources


def test_a_decode_planned_ahead_takes_its_token_from_the_step_in_flight() -> None:
    sources = TokenSources()
    # Step 1: prefill samples the first token; nothing in flight before it.
    assert sources.plan(1, [Row("a", in_flight=0, needed=0, produces=True)]) == {}
    # Step 2 is planned before step 1 is back: its input is step 1's token.
    assert sources.plan(2, [Row("a", in_flight=1, needed=1, produces=True)]) == {"a": [1]}
    # Step 1's token reached the scheduler; step 3's input is step 2's token.
    assert sources.plan(3, [Row("a", in_flight=1, needed=1, produces=True)]) == {"a": [2]}


def test_known_tokens_need_no_source() -> None:
    sources = TokenSources()
    sources.plan(1, [Row("a", in_flight=0, needed=0, produces=True)])
    # The scheduler saw step 1's token before planning step 2 (synchronous turn).
    assert sources.plan(2, [Row("a", in_flight=0, needed=0, produces=True)]) == {}


def test_a_partial_prefill_chunk_samples_nothing() -> None:
    sources = TokenSources()
    sources.plan(1, [Row("a", in_flight=0, needed=0, produces=False)])
    sources.plan(2, [Row("a", in_flight=0, needed=0, produces=True)])
    assert sources.plan(3, [Row("a", in_flight=1, needed=1, produces=True)]) == {"a": [2]}


def test_two_tokens_in_flight_come_from_two_steps_in_order() -> None:
    sources = TokenSources()
    sources.plan(4, [Row("a", in_flight=0, needed=0, produces=True)])
    sources.plan(5, [Row("a", in_flight=1, needed=1, produces=True)])
    assert sources.plan(6, [Row("a", in_flight=2, needed=2, produces=True)]) == {"a": [4, 5]}


def test_requests_are_tracked_apart() -> None:
    sources = TokenSources()
    sources.plan(1, [Row("a", 0, 0, True), Row("b", 0, 0, True)])
    sources.plan(2, [Row("b", 1, 1, True)])
    got = sources.plan(3, [Row("a", 1, 1, True), Row("b", 1, 1, True)])
    assert got == {"a": [1], "b": [2]}


def test_preemption_empties_what_was_in_flight() -> None:
    sources = TokenSources()
    sources.plan(1, [Row("a", 0, 0, True)])
    # vLLM zeroes the placeholders of a preempted request; it resumes from known tokens.
    assert sources.plan(2, [Row("a", 0, 0, True)]) == {}
    assert sources.plan(3, [Row("a", 1, 1, True)]) == {"a": [2]}


def test_more_placeholders_than_steps_in_flight_is_refused_by_name() -> None:
    sources = TokenSources()
    with pytest.raises(MissingSource, match="request a needs 1 tokens"):
        sources.plan(1, [Row("a", in_flight=0, needed=1, produces=True)])


def test_forget_and_clear() -> None:
    sources = TokenSources()
    sources.plan(1, [Row("a", 0, 0, True), Row("b", 0, 0, True)])
    sources.forget(["a"])
    assert len(sources) == 1
    sources.clear()
    assert len(sources) == 0
