"""Admission control as pure bookkeeping: run, queue, or refuse a request. No I/O, no clock."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class AdmissionLimits:
    """Caps on one gateway's load (max_per_key 0 = unlimited); immutable, any thread."""

    max_running: int
    max_queued: int
    max_queued_tokens: int
    max_per_key: int = 0

    def __post_init__(self) -> None:
        if self.max_running < 1:
            raise ValueError("max_running must be at least 1 (LAYERBUS_MAX_RUNNING_REQUESTS)")
        if min(self.max_queued, self.max_queued_tokens, self.max_per_key) < 0:
            raise ValueError("admission caps cannot be negative")


class TicketState(Enum):
    """Where an admitted request is; a plain value."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False)
class Ticket:
    """One admitted request; changed only by AdmissionController, on the event loop."""

    id: int
    key: str | None
    tokens: int
    state: TicketState = TicketState.QUEUED


@dataclass(frozen=True)
class Rejection:
    """Why a request is refused (429 per-key, 503 overload); immutable value."""

    status: int
    code: str
    message: str


@dataclass
class AdmissionController:
    """FIFO admission with caps on running, queued, tokens and per key; event loop only.

    Pure: the caller (AdmissionGate) wakes the queued requests `release` promotes.
    """

    limits: AdmissionLimits
    running: int = 0
    queued_tokens: int = 0
    _queue: OrderedDict[int, Ticket] = field(default_factory=OrderedDict)
    _per_key: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def queued(self) -> int:
        """Requests waiting for a running slot."""
        return len(self._queue)

    def per_key(self, key: str) -> int:
        """Running plus queued requests of one API key."""
        return self._per_key.get(key, 0)

    def admit(self, key: str | None, tokens: int) -> Ticket | Rejection:
        """Run now, queue, or refuse a request estimated at `tokens` prompt tokens."""
        limits = self.limits
        if key is not None and limits.max_per_key and self.per_key(key) >= limits.max_per_key:
            return Rejection(
                429,
                "too_many_concurrent_requests",
                f"this API key already has {limits.max_per_key} requests in progress "
                "(LAYERBUS_MAX_CONCURRENCY_PER_KEY); retry later",
            )
        ticket = Ticket(next(self._ids), key, max(tokens, 0))
        if self.running < limits.max_running and not self._queue:
            ticket.state = TicketState.RUNNING
            self.running += 1
        elif (
            self.queued < limits.max_queued
            and self.queued_tokens + ticket.tokens <= limits.max_queued_tokens
        ):
            self._queue[ticket.id] = ticket
            self.queued_tokens += ticket.tokens
        else:
            return Rejection(
                503,
                "server_overloaded",
                f"the gateway is at capacity ({self.running} running, {self.queued} queued, "
                f"{self.queued_tokens} queued prompt tokens); retry later",
            )
        if key is not None:
            self._per_key[key] = self.per_key(key) + 1
        return ticket

    def release(self, ticket: Ticket) -> list[Ticket]:
        """A request ended (or left the queue); return the tickets promoted to running."""
        if ticket.state is TicketState.DONE:
            return []
        if ticket.state is TicketState.RUNNING:
            self.running -= 1
        else:
            self._dequeue(ticket)
        ticket.state = TicketState.DONE
        if ticket.key is not None:
            left = self.per_key(ticket.key) - 1
            if left:
                self._per_key[ticket.key] = left
            else:
                self._per_key.pop(ticket.key, None)
        return self._promote()

    def _dequeue(self, ticket: Ticket) -> None:
        self._queue.pop(ticket.id, None)
        self.queued_tokens -= ticket.tokens

    def _promote(self) -> list[Ticket]:
        promoted: list[Ticket] = []
        while self._queue and self.running < self.limits.max_running:
            _, ticket = self._queue.popitem(last=False)
            self.queued_tokens -= ticket.tokens
            ticket.state = TicketState.RUNNING
            self.running += 1
            promoted.append(ticket)
        return promoted
