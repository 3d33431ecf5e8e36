"""OpenAI response shapes for chat and text completions, whole and streamed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.gateway.sequence import Candidate, LogprobEntry, SeqDelta, SequenceState


@dataclass(frozen=True)
class ResponseMeta:
    """Fields every response of one request repeats; immutable value."""

    id: str
    created: int
    model: str


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The `usage` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# ------------------------------------------------------------------ logprobs


def _chat_candidate(c: Candidate) -> dict[str, Any]:
    return {"token": c.token, "logprob": c.logprob, "bytes": c.bytes}


def chat_logprobs(entries: Sequence[LogprobEntry]) -> dict[str, Any]:
    """`choices[].logprobs` of a chat completion."""
    return {
        "content": [
            {**_chat_candidate(e.sampled), "top_logprobs": [_chat_candidate(c) for c in e.top]}
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[LogprobEntry]) -> dict[str, Any]:
    """`choices[].logprobs` of a text completion (the legacy column layout)."""
    top: list[dict[str, float]] = []
    for e in entries:
        candidates = e.top or [e.sampled]
        top.append({c.token: c.logprob for c in candidates})
    return {
        "tokens": [e.sampled.token for e in entries],
        "token_logprobs": [e.sampled.logprob for e in entries],
        "top_logprobs": top,
        "text_offset": [e.text_offset for e in entries],
    }


# ------------------------------------------------------------------ whole responses


def _envelope(meta: ResponseMeta, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """What every response and chunk of a request carries around its choices."""
    return {
        "id": meta.id,
        "object": obj,
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "system_fingerprint": None,
    }


def chat_completion(
    meta: ResponseMeta, sequences: Sequence[SequenceState], logprobs: bool, use: dict[str, int]
) -> dict[str, Any]:
    """A non-streaming chat.completion."""
    choices = [
        {
            "index": seq.index,
            "message": {"role": "assistant", "content": seq.text, "refusal": None},
            "logprobs": chat_logprobs(seq.logprobs) if logprobs else None,
            "finish_reason": seq.finish_reason,
        }
        for seq in sequences
    ]
    return {**_envelope(meta, "chat.completion", choices), "usage": use}


def add_tool_calls(
    choice: dict[str, Any], extracted: tuple[str | None, list[dict[str, Any]]]
) -> None:
    """Put extracted tool calls into a chat choice; finish_reason becomes tool_calls."""
    content, calls = extracted
    if not calls:
        return
    choice["message"]["content"] = content
    choice["message"]["tool_calls"] = calls
    if choice["finish_reason"] == "stop":
        choice["finish_reason"] = "tool_calls"


def tool_call_chunk(
    meta: ResponseMeta,
    index: int,
    extracted: tuple[str | None, list[dict[str, Any]]],
    finish_reason: str | None,
) -> dict[str, Any]:
    """The chunk that ends a tool-using chat choice: content, then every call whole."""
    content, calls = extracted
    delta: dict[str, Any] = {}
    if content:
        delta["content"] = content
    if calls:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        if finish_reason == "stop":
            finish_reason = "tool_calls"
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return _envelope(meta, "chat.completion.chunk", [choice])


def text_completion(
    meta: ResponseMeta, sequences: Sequence[SequenceState], logprobs: bool, use: dict[str, int]
) -> dict[str, Any]:
    """A non-streaming text_completion."""
    choices = [
        {
            "index": seq.index,
            "text": seq.text,
            "logprobs": completion_logprobs(seq.logprobs) if logprobs else None,
            "finish_reason": seq.finish_reason,
        }
        for seq in sequences
    ]
    return {**_envelope(meta, "text_completion", choices), "usage": use}


# ------------------------------------------------------------------ stream chunks


def chat_role_chunk(meta: ResponseMeta, index: int) -> dict[str, Any]:
    """First chunk of each chat choice: the assistant role."""
    choice = {
        "index": index,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    return _envelope(meta, "chat.completion.chunk", [choice])


def chat_delta_chunk(meta: ResponseMeta, delta: SeqDelta, logprobs: bool) -> dict[str, Any]:
    """A chat.completion.chunk for one sequence delta."""
    choice = {
        "index": delta.index,
        "delta": {"content": delta.text} if delta.text else {},
        "logprobs": chat_logprobs(delta.logprobs) if logprobs and delta.logprobs else None,
        "finish_reason": delta.finish_reason,
    }
    return _envelope(meta, "chat.completion.chunk", [choice])


def completion_delta_chunk(meta: ResponseMeta, delta: SeqDelta, logprobs: bool) -> dict[str, Any]:
    """A text_completion chunk for one sequence delta."""
    choice = {
        "index": delta.index,
        "text": delta.text,
        "logprobs": completion_logprobs(delta.logprobs) if logprobs and delta.logprobs else None,
        "finish_reason": delta.finish_reason,
    }
    return _envelope(meta, "text_completion", [choice])


def usage_chunk(meta: ResponseMeta, obj: str, use: dict[str, int]) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, only usage."""
    return {**_envelope(meta, obj, []), "usage": use}
