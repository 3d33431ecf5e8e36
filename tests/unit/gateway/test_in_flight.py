"""InFlightRequests: after a coordinator restart, fail only what the new one cannot hold."""

from __future__ import annotations

from services.gateway.in_flight import InFlightRequests


def seen(incarnation: str, nonce: int = 1) -> InFlightRequests:
    tracker = InFlightRequests()
    assert tracker.on_status(nonce, incarnation) == ([], [])
    return tracker


def test_requests_the_old_incarnation_acknowledged_are_lost_on_a_new_one() -> None:
    tracker = seen("old")
    tracker.sent("a", next_nonce=2)
    tracker.accepted(["a"], "old")
    assert tracker.on_status(2, "old") == ([], [])
    assert tracker.on_status(3, "new") == (["a"], [])
    assert len(tracker) == 0 and tracker.incarnation == "new"


def test_a_request_sent_after_the_restart_survives_the_first_status_of_the_new_one() -> None:
    # The reported case: the gateway still held the old status; queries 2 and 3 were
    # queued while the coordinator was down; "fresh" went to the new one after them.
    tracker = seen("old")
    tracker.sent("old-work", next_nonce=2)
    tracker.accepted(["old-work"], "old")
    tracker.sent("fresh", next_nonce=4)
    assert tracker.on_status(2, "new") == (["old-work"], [])
    tracker.accepted(["fresh"], "new")
    assert tracker.on_status(4, "new") == ([], [])
    assert len(tracker) == 1


def test_a_request_sent_before_the_query_and_never_acknowledged_never_reached_the_new_one() -> None:
    tracker = seen("old")
    tracker.sent("lost", next_nonce=2)  # written to the old coordinator's socket as it died
    tracker.sent("later", next_nonce=3)
    assert tracker.on_status(2, "new") == ([], ["lost"])
    assert len(tracker) == 1  # "later" waits for its acknowledgement


def test_an_unacknowledged_request_is_never_failed_while_the_incarnation_stays() -> None:
    tracker = seen("same")
    tracker.sent("slow", next_nonce=2)
    for nonce in range(2, 6):
        assert tracker.on_status(nonce, "same") == ([], [])
    tracker.accepted(["slow"], "same")
    assert tracker.on_status(6, "same") == ([], [])
    assert len(tracker) == 1


def test_forgotten_and_unknown_requests_are_never_reported() -> None:
    tracker = seen("old")
    tracker.sent("done", next_nonce=2)
    tracker.accepted(["done", "stranger"], "old")
    tracker.forget("done")
    assert tracker.on_status(2, "new") == ([], [])
    assert len(tracker) == 0


def test_a_resent_id_starts_over_unacknowledged() -> None:
    tracker = seen("old")
    tracker.sent("r", next_nonce=2)
    tracker.accepted(["r"], "old")
    tracker.sent("r", next_nonce=5)
    assert tracker.on_status(3, "new") == ([], [])
    assert len(tracker) == 1
