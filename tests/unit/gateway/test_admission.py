"""AdmissionController: run, queue, refuse; promotion and per-key accounting."""

from __future__ import annotations

import pytest

from services.gateway.admission import (
    AdmissionController,
    AdmissionLimits,
    Rejection,
    Ticket,
    TicketState,
)


def controller(
    running: int = 2, queued: int = 2, tokens: int = 1000, per_key: int = 0
) -> AdmissionController:
    return AdmissionController(AdmissionLimits(running, queued, tokens, per_key))


def ticket(result: Ticket | Rejection) -> Ticket:
    assert isinstance(result, Ticket), result
    return result


def test_runs_until_running_cap_then_queues_then_refuses_with_503() -> None:
    ac = controller(running=2, queued=1)
    a, b = ticket(ac.admit(None, 10)), ticket(ac.admit(None, 10))
    c = ticket(ac.admit(None, 10))
    refused = ac.admit(None, 10)
    assert (a.state, b.state, c.state) == (TicketState.RUNNING,) * 2 + (TicketState.QUEUED,)
    assert isinstance(refused, Rejection)
    assert (refused.status, refused.code) == (503, "server_overloaded")
    assert (ac.running, ac.queued, ac.queued_tokens) == (2, 1, 10)


def test_queued_prompt_token_cap_refuses_even_with_free_queue_slots() -> None:
    ac = controller(running=1, queued=10, tokens=100)
    ticket(ac.admit(None, 5))
    ticket(ac.admit(None, 60))
    refused = ac.admit(None, 50)
    assert isinstance(refused, Rejection) and refused.status == 503
    assert ticket(ac.admit(None, 40)).state is TicketState.QUEUED


def test_release_promotes_in_fifo_order() -> None:
    ac = controller(running=1, queued=3)
    first = ticket(ac.admit(None, 1))
    second, third = ticket(ac.admit(None, 2)), ticket(ac.admit(None, 3))
    assert ac.release(first) == [second]
    assert second.state is TicketState.RUNNING and third.state is TicketState.QUEUED
    assert ac.queued_tokens == 3
    assert ac.release(second) == [third]
    assert ac.release(third) == []
    assert (ac.running, ac.queued, ac.queued_tokens) == (0, 0, 0)


def test_new_request_does_not_jump_the_queue() -> None:
    ac = controller(running=1, queued=2)
    first = ticket(ac.admit(None, 1))
    waiting = ticket(ac.admit(None, 1))
    ac.release(first)  # promotes `waiting`
    late = ticket(ac.admit(None, 1))
    assert waiting.state is TicketState.RUNNING
    assert late.state is TicketState.QUEUED


def test_releasing_a_queued_ticket_removes_it_without_promoting_others() -> None:
    ac = controller(running=1, queued=2)
    ticket(ac.admit(None, 1))
    leaver, stayer = ticket(ac.admit(None, 7)), ticket(ac.admit(None, 5))
    assert ac.release(leaver) == []
    assert (ac.queued, ac.queued_tokens) == (1, 5)
    assert stayer.state is TicketState.QUEUED


def test_release_is_idempotent() -> None:
    ac = controller(running=1, queued=1)
    a = ticket(ac.admit(None, 1))
    ac.release(a)
    assert ac.release(a) == []
    assert ac.running == 0


def test_per_key_cap_answers_429_and_counts_queued_requests() -> None:
    ac = controller(running=1, queued=5, per_key=2)
    a = ticket(ac.admit("key-0", 1))
    ticket(ac.admit("key-0", 1))  # queued, still counts
    refused = ac.admit("key-0", 1)
    assert isinstance(refused, Rejection)
    assert (refused.status, refused.code) == (429, "too_many_concurrent_requests")
    assert isinstance(ac.admit("key-1", 1), Ticket)  # other keys unaffected
    ac.release(a)
    assert ac.per_key("key-0") == 1
    assert isinstance(ac.admit("key-0", 1), Ticket)


def test_per_key_cap_zero_means_unlimited() -> None:
    ac = controller(running=100, per_key=0)
    for _ in range(50):
        assert isinstance(ac.admit("key-0", 1), Ticket)


@pytest.mark.parametrize(
    "limits",
    [
        dict(max_running=0, max_queued=1, max_queued_tokens=1),
        dict(max_running=1, max_queued=-1, max_queued_tokens=1),
        dict(max_running=1, max_queued=1, max_queued_tokens=1, max_per_key=-2),
    ],
)
def test_invalid_limits_are_rejected(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(**limits)
