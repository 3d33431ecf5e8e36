"""Encode and decode wire messages as [tag, msgpack body, *buffers] frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shared import wire

# One byte per message type. Never reuse a retired tag.
_TAGS: dict[type[msgspec.Struct], bytes] = {
    wire.Generate: b"\x01",
    wire.Abort: b"\x02",
    wire.StatusQuery: b"\x03",
    wire.Outputs: b"\x10",
    wire.Status: b"\x11",
    wire.Accepted: b"\x12",
    wire.Register: b"\x20",
    wire.Configure: b"\x21",
    wire.Configured: b"\x22",
    wire.Heartbeat: b"\x23",
    wire.Shutdown: b"\x24",
    wire.Reset: b"\x25",
    wire.Leave: b"\x26",
    wire.Offer: b"\x27",
    wire.OfferSeen: b"\x28",
    wire.Assign: b"\x29",
    wire.Step: b"\x30",
    wire.StepResult: b"\x31",
    wire.Tokens: b"\x32",
}


def register(cls: type[msgspec.Struct], tag: bytes) -> None:
    """Add a message type to the tag table (used by modules that own more messages)."""
    if len(tag) != 1:
        raise ValueError("a tag is exactly one byte")
    for other, other_tag in _TAGS.items():
        if other_tag == tag and other is not cls:
            raise ValueError(f"tag {tag!r} already used by {other.__name__}")
    _TAGS[cls] = tag
    _DECODERS[tag] = (cls, msgspec.msgpack.Decoder(cls))


_DECODERS: dict[bytes, tuple[type[msgspec.Struct], msgspec.msgpack.Decoder[Any]]] = {
    tag: (cls, msgspec.msgpack.Decoder(cls)) for cls, tag in _TAGS.items()
}
_ENCODER = msgspec.msgpack.Encoder()


def encode(msg: msgspec.Struct) -> list[bytes]:
    """Frames for one message without tensor buffers."""
    try:
        tag = _TAGS[type(msg)]
    except KeyError:
        raise TypeError(f"{type(msg).__name__} is not a registered wire message") from None
    return [tag, _ENCODER.encode(msg)]


def message_type(frames: Sequence[bytes | memoryview | Any]) -> type[msgspec.Struct] | None:
    """The message type frames[0]'s tag names, or None for an unknown tag."""
    entry = _DECODERS.get(bytes(frame_buffer(frames[0]))) if frames else None
    return None if entry is None else entry[0]


def decode(frames: Sequence[bytes | memoryview | Any]) -> msgspec.Struct:
    """Typed decode of frames[0:2]; raises WireError on anything malformed."""
    if len(frames) < 2:
        raise wire.WireError(f"expected at least 2 frames, got {len(frames)}")
    tag = bytes(frame_buffer(frames[0]))
    entry = _DECODERS.get(tag)
    if entry is None:
        raise wire.WireError(f"unknown message tag {tag!r}")
    try:
        return entry[1].decode(frame_buffer(frames[1]))
    except (msgspec.MsgspecError, ValueError, TypeError) as err:
        # ValueError includes UnicodeDecodeError: msgspec raises it for invalid UTF-8.
        raise wire.WireError(f"bad {entry[0].__name__} body: {err}") from None


def frame_buffer(frame: Any) -> bytes | memoryview:
    """The bytes of a frame: accept bytes, memoryview or zmq.Frame (received with copy=False)."""
    if isinstance(frame, bytes | memoryview):
        return frame
    buffer = getattr(frame, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    return bytes(frame)
