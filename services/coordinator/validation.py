"""Checks every Generate before it reaches the engine (pure logic).

The gateway validates what clients send, but the coordinator trusts no peer.
Ranges that need no model (temperature in [0, 2], ...) are declared on the wire
structs and enforced by the typed decode; a Generate refused there is still
answered (refused_generate). What remains here depends on the model: token ids
within the vocabulary, top_k, the context length, and the request id's form. A
raw Generate with an out-of-vocabulary token id would fail a whole engine step;
each check answers that one request with an error and leaves the engine serving.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from shared import codec, wire
from shared.context_length import context_length_error

MAX_REQUEST_ID_CHARS = 256


@dataclass(frozen=True)
class GenerateLimits:
    """What a Generate may ask for; built once at start-up, read-only afterwards."""

    vocab_size: int
    max_model_len: int


@dataclass(frozen=True)
class RefusedGenerate:
    """A Generate the typed decode refused: answered with `error`, never run; a value."""

    request_id: str
    error: str


class _RequestId(msgspec.Struct):
    """The one field of a Generate body needed to answer it (other fields ignored)."""

    request_id: str


_REQUEST_ID = msgspec.msgpack.Decoder(_RequestId)


def refused_generate(frames: Sequence[Any], err: wire.WireError) -> RefusedGenerate | None:
    """The refusal to answer for frames holding a Generate the typed decode refused.

    None when the frames are no Generate or carry no readable request id (then the
    message is only dropped).
    """
    if len(frames) < 2 or codec.message_type(frames) is not wire.Generate:
        return None
    try:
        rid = _REQUEST_ID.decode(codec.frame_buffer(frames[1])).request_id
    except (msgspec.MsgspecError, ValueError, TypeError):
        return None
    return RefusedGenerate(rid[:MAX_REQUEST_ID_CHARS], str(err))


def model_vocab_size(model: str) -> int:
    """Vocabulary size, read from the model folder's config.json."""
    config = json.loads((Path(model) / "config.json").read_text())
    return int(config.get("text_config", config)["vocab_size"])


def _check_tokens(ids: list[int], vocab_size: int, what: str) -> str | None:
    for token in ids:
        if not 0 <= token < vocab_size:
            return f"{what} contains token id {token}, outside the vocabulary [0, {vocab_size})"
    return None


def _is_token_id(kind: Any) -> bool:
    return isinstance(kind, msgspec.inspect.Metadata) and bool((kind.extra or {}).get("token_id"))


def _holds_token_ids(kind: Any) -> bool:
    if isinstance(kind, msgspec.inspect.ListType):
        return _is_token_id(kind.item_type)
    return isinstance(kind, msgspec.inspect.DictType) and _is_token_id(kind.key_type)


def token_id_fields(struct: type[msgspec.Struct]) -> list[str]:
    """Fields of a wire struct holding token ids (wire.TokenId list items or dict keys)."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    names = []
    for f in info.fields:
        kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        if any(_holds_token_ids(kind) for kind in kinds):
            names.append(f.name)
    return names


# Every SamplingSpec field of token ids is checked against the vocabulary by name.
_SAMPLING_TOKEN_FIELDS = token_id_fields(wire.SamplingSpec)


def _check_sampling(s: wire.SamplingSpec, limits: GenerateLimits) -> str | None:
    if s.top_k > limits.vocab_size:
        return f"top_k must be 0 (off) or in [1, {limits.vocab_size}], got {s.top_k}"
    if s.min_tokens > s.max_tokens:
        return "min_tokens must be in [0, max_tokens]"
    for name in _SAMPLING_TOKEN_FIELDS:
        ids = getattr(s, name)  # a list, or a dict keyed by token id
        if ids is not None and (bad := _check_tokens(list(ids), limits.vocab_size, name)):
            return bad
    return None


def generate_error(msg: wire.Generate, limits: GenerateLimits) -> str | None:
    """Why this Generate must be refused, or None if the engine may take it."""
    rid = msg.request_id
    if not rid or len(rid) > MAX_REQUEST_ID_CHARS or not rid.isprintable():
        return f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} printable characters"
    prompt = msg.prompt_token_ids
    too_long = context_length_error(len(prompt), msg.sampling.max_tokens, limits.max_model_len)
    if too_long is not None:
        return too_long
    return _check_sampling(msg.sampling, limits) or _check_tokens(
        prompt, limits.vocab_size, "the prompt"
    )


def invalid_answer(request_id: str, error: str) -> wire.Outputs:
    """The answer to a Generate the request itself is at fault for (invalid: not the service)."""
    out = wire.RequestOutput(
        request_id=request_id[:MAX_REQUEST_ID_CHARS],
        token_ids=[],
        finish_reason="error",
        error=error,
        invalid=True,
    )
    return wire.Outputs(items=[out])


def not_ready_answer(request_id: str, detail: str) -> wire.Outputs:
    """The answer to a Generate while no engine takes requests; detail says why."""
    out = wire.RequestOutput(
        request_id=request_id,
        token_ids=[],
        finish_reason="error",
        error=f"not ready: {detail}",
    )
    return wire.Outputs(items=[out])
