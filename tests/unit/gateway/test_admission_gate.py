"""AdmissionGate: queued requests wait and wake; refusals carry Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.admission import AdmissionLimits, TicketState
from services.gateway.admission_gate import AdmissionGate, estimate_tokens
from services.gateway.errors import APIError


def gate(running: int = 1, queued: int = 1, per_key: int = 0) -> AdmissionGate:
    return AdmissionGate(AdmissionLimits(running, queued, 10_000, per_key), retry_after_s=7)


def test_queued_request_wakes_when_a_slot_frees() -> None:
    async def scenario() -> None:
        g = gate()
        first = await g.acquire(None, 1)
        waiter = asyncio.create_task(g.acquire(None, 1))
        await asyncio.sleep(0)
        assert not waiter.done() and g.controller.queued == 1
        g.release(first)
        second = await asyncio.wait_for(waiter, 5)
        assert second.state is TicketState.RUNNING

    asyncio.run(scenario())


def test_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        g = gate()
        first = await g.acquire(None, 1)
        waiter = asyncio.create_task(g.acquire(None, 1))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert g.controller.queued == 0
        g.release(first)
        assert g.controller.running == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("per_key", "status", "code"),
    [(0, 503, "server_overloaded"), (1, 429, "too_many_concurrent_requests")],
)
def test_refusal_is_an_api_error_with_retry_after(per_key: int, status: int, code: str) -> None:
    async def scenario() -> None:
        g = gate(running=1, queued=0, per_key=per_key)
        await g.acquire("key-0", 1)
        with pytest.raises(APIError) as info:
            await g.acquire("key-0", 1)
        assert (info.value.status, info.value.code) == (status, code)
        assert info.value.headers["Retry-After"] == "7"

    asyncio.run(scenario())


def test_token_estimate_rounds_up() -> None:
    assert [estimate_tokens(b) for b in (0, 1, 4, 5, 4000)] == [0, 1, 1, 2, 1000]
