"""Test helper: split an SSE body into its data payloads."""

from __future__ import annotations

from typing import Any

import orjson


def events(body: str) -> list[Any]:
    """Payloads of every `data:` event, JSON-decoded except the final "[DONE]"."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else orjson.loads(data))
    return out
