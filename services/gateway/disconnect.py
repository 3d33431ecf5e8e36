"""Run a coroutine until it ends or the HTTP client disconnects, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client left before the work finished; raised in the request's task."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the ASGI server reports http.disconnect (body already consumed)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Result of `work`; if the client leaves first, cancel `work` and raise ClientGone."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait([work_task, watch_task], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work_task.cancel()
        raise
    finally:
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
    if not work_task.done():
        work_task.cancel()
        # Wait without re-raising the child's CancelledError; our own still propagates.
        await asyncio.wait([work_task])
        raise ClientGone()
    return work_task.result()
