"""Pure: which coordinator incarnation holds each request the gateway has in flight.

The coordinator acknowledges every Generate with its incarnation (wire.Accepted)
before it answers anything later from the same gateway, and one ZeroMQ connection
keeps order. So when the Status reply to query n comes from a new incarnation, a
request it cannot hold is one acknowledged by another incarnation, or one sent
before query n and never acknowledged (it went to the old coordinator and was lost).
A request sent after query n went to the new incarnation, or to none later still:
it stays in flight until its acknowledgement or the next new incarnation decides.
"""

from __future__ import annotations

from collections.abc import Iterable


class InFlightRequests:
    """Submission and acknowledgement of each request in flight; event loop only."""

    def __init__(self) -> None:
        self._incarnation: str | None = None
        self._unacknowledged: dict[str, int] = {}  # request id -> first query nonce after it
        self._holder: dict[str, str] = {}  # request id -> incarnation that acknowledged it

    @property
    def incarnation(self) -> str | None:
        """The incarnation of the latest Status seen (None before the first)."""
        return self._incarnation

    def sent(self, request_id: str, next_nonce: int) -> None:
        """A Generate went out; `next_nonce` is the nonce the next StatusQuery will carry."""
        self._holder.pop(request_id, None)
        self._unacknowledged[request_id] = next_nonce

    def accepted(self, request_ids: Iterable[str], incarnation: str) -> None:
        """The coordinator `incarnation` acknowledged these requests."""
        for rid in request_ids:
            if self._unacknowledged.pop(rid, None) is not None:
                self._holder[rid] = incarnation

    def forget(self, request_id: str) -> None:
        """The request finished or was given up; nothing more to decide about it."""
        self._unacknowledged.pop(request_id, None)
        self._holder.pop(request_id, None)

    def on_status(self, nonce: int, incarnation: str) -> tuple[list[str], list[str]]:
        """The Status reply to query `nonce` came from `incarnation`.

        Returns (acknowledged by an earlier incarnation, sent to an earlier incarnation
        and never acknowledged): the requests that are lost, now forgotten.
        """
        changed = incarnation != self._incarnation
        self._incarnation = incarnation
        held_elsewhere = [rid for rid, inc in self._holder.items() if inc != incarnation]
        never_reached: list[str] = []
        if changed:
            never_reached = [rid for rid, n in self._unacknowledged.items() if n <= nonce]
        for rid in held_elsewhere + never_reached:
            self.forget(rid)
        return held_elsewhere, never_reached

    def __len__(self) -> int:
        return len(self._unacknowledged) + len(self._holder)
