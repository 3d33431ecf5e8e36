"""Server-sent events: the chunk stream of one request and the response that sends it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway import shapes
from services.gateway.disconnect import ClientGone, run_until_disconnect
from services.gateway.errors import APIError, error_body, generation_failed
from services.gateway.generation import Generation
from services.gateway.metrics import RequestTimer
from services.gateway.tools import ToolExtractor

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE data event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(frozen=True)
class StreamPlan:
    """How to shape the chunks of one streaming request; immutable value."""

    chat: bool
    meta: shapes.ResponseMeta
    logprobs: bool
    include_usage: bool
    # Tool-using chat: text is held back and sent as tool_calls when the choice ends.
    tools: ToolExtractor | None = None


async def sse_events(
    gen: Generation,
    plan: StreamPlan,
    timer: RequestTimer,
    on_error: Callable[[int], None],
) -> AsyncIterator[bytes]:
    """All events of a streaming response; always ends with [DONE], errors included."""
    obj = "chat.completion.chunk" if plan.chat else "text_completion"
    held: dict[int, str] = {}
    try:
        if plan.chat:
            for seq in gen.sequences:
                yield sse(shapes.chat_role_chunk(plan.meta, seq.index))
        async for delta in gen.deltas():
            timer.tokens(delta.num_new_tokens)
            if delta.error is not None:
                raise generation_failed(delta.error, delta.invalid)
            if not (delta.text or delta.finish_reason or delta.logprobs):
                continue
            if plan.chat and plan.tools is not None:
                held[delta.index] = held.get(delta.index, "") + delta.text
                if delta.finish_reason is not None:
                    extracted = plan.tools.extract(held.pop(delta.index))
                    chunk = shapes.tool_call_chunk(
                        plan.meta, delta.index, extracted, delta.finish_reason
                    )
                    yield sse(chunk)
                continue
            if plan.chat:
                yield sse(shapes.chat_delta_chunk(plan.meta, delta, plan.logprobs))
            else:
                yield sse(shapes.completion_delta_chunk(plan.meta, delta, plan.logprobs))
        timer.finished()
        if plan.include_usage:
            use = shapes.usage(gen.prompt_tokens, gen.completion_tokens)
            yield sse(shapes.usage_chunk(plan.meta, obj, use))
    except APIError as err:
        on_error(err.status)
        yield sse(err.body())
    except Exception as err:  # the stream has started: report in-band, never cut it
        log.exception("stream %s failed", gen.request_id)
        on_error(500)
        yield sse(error_body(f"internal error: {type(err).__name__}", type="server_error"))
    finally:
        gen.close()
    yield DONE


class SSEResponse(Response):
    """Streams SSE, cancelled the moment the client leaves; runs on the event loop.

    `on_close` runs exactly once however the stream ends.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        self._events = events
        self._on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await run_until_disconnect(receive, self._send_all(send))
        except ClientGone:
            log.info("client disconnected from a stream")
        finally:
            try:
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self._on_close()

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for chunk in self._events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
