"""Asyncio front of AdmissionController: wait in the queue, refuse with Retry-After."""

from __future__ import annotations

import asyncio

from services.gateway.admission import (
    AdmissionController,
    AdmissionLimits,
    Rejection,
    Ticket,
    TicketState,
)
from services.gateway.errors import APIError

# Before tokenizing we only know the body size; ~4 bytes per token is the usual
# ratio for English BPE text and errs high for JSON-heavy bodies.
BYTES_PER_TOKEN_ESTIMATE = 4


def estimate_tokens(body_bytes: int) -> int:
    """Prompt-token estimate used for queue accounting before tokenization."""
    return -(-body_bytes // BYTES_PER_TOKEN_ESTIMATE)


class AdmissionGate:
    """Admits HTTP requests through an AdmissionController; lives on the event loop."""

    def __init__(self, limits: AdmissionLimits, retry_after_s: int) -> None:
        self.controller = AdmissionController(limits)
        self._retry_after_s = retry_after_s
        self._waiters: dict[int, asyncio.Future[None]] = {}

    async def acquire(self, key: str | None, tokens: int) -> Ticket:
        """A running ticket; waits while queued; raises APIError 429/503 when refused."""
        result = self.controller.admit(key, tokens)
        if isinstance(result, Rejection):
            raise APIError(
                result.status,
                result.message,
                code=result.code,
                headers={"Retry-After": str(self._retry_after_s)},
            )
        if result.state is TicketState.RUNNING:
            return result
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[result.id] = fut
        try:
            await fut
        except BaseException:
            # Cancelled while queued (client left) or promoted at the same moment.
            self._waiters.pop(result.id, None)
            self.release(result)
            raise
        return result

    def release(self, ticket: Ticket) -> None:
        """Give the slot back (idempotent) and wake whoever it promoted."""
        for promoted in self.controller.release(ticket):
            waiter = self._waiters.pop(promoted.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
