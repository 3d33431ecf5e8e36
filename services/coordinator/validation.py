"""Checks every Generate before it reaches the engine (pure logic).

The gateway validates what clients send, but the coordinator trusts no peer:
a raw Generate with an out-of-vocabulary token id fails a whole engine step,
and sampling values vLLM rejects raise inside the engine thread. Each check
here answers that one request with an error and leaves the engine serving.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from shared import wire

MAX_REQUEST_ID_CHARS = 256
MAX_STOP_TOKEN_IDS = 1024
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerateLimits:
    """What a Generate may ask for; built once at start-up, read-only afterwards."""

    vocab_size: int
    max_model_len: int
    max_logprobs: int = 20


def model_vocab_size(model: str) -> int:
    """Vocabulary size, read from the model folder's config.json."""
    config = json.loads((Path(model) / "config.json").read_text())
    return int(config.get("text_config", config)["vocab_size"])


def _check_tokens(ids: list[int], vocab_size: int, what: str) -> str | None:
    for token in ids:
        if not 0 <= token < vocab_size:
            return f"{what} contains token id {token}, outside the vocabulary [0, {vocab_size})"
    return None


def _check_sampling(s: wire.SamplingSpec, limits: GenerateLimits) -> str | None:
    floats = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "repetition_penalty": s.repetition_penalty,
    }
    for name, value in floats.items():
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
    ranges = [
        (0.0 <= s.temperature <= 2.0, f"temperature must be in [0, 2], got {s.temperature}"),
        (0.0 < s.top_p <= 1.0, f"top_p must be in (0, 1], got {s.top_p}"),
        (
            -1 <= s.top_k <= limits.vocab_size,
            f"top_k must be 0 (off) or in [1, {limits.vocab_size}], got {s.top_k}",
        ),
        (0.0 <= s.min_p <= 1.0, f"min_p must be in [0, 1], got {s.min_p}"),
        (-2.0 <= s.presence_penalty <= 2.0, "presence_penalty must be in [-2, 2]"),
        (-2.0 <= s.frequency_penalty <= 2.0, "frequency_penalty must be in [-2, 2]"),
        (0.0 < s.repetition_penalty <= 10.0, "repetition_penalty must be in (0, 10]"),
        (s.max_tokens >= 1, f"max_tokens must be at least 1, got {s.max_tokens}"),
        (0 <= s.min_tokens <= s.max_tokens, "min_tokens must be in [0, max_tokens]"),
        (
            s.seed is None or -MAX_SEED <= s.seed <= MAX_SEED,
            "seed must fit in a signed 64-bit integer",
        ),
        (
            s.logprobs is None or 0 <= s.logprobs <= limits.max_logprobs,
            f"logprobs must be in [0, {limits.max_logprobs}], got {s.logprobs}",
        ),
        (
            len(s.stop_token_ids) <= MAX_STOP_TOKEN_IDS,
            f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids",
        ),
    ]
    for ok, message in ranges:
        if not ok:
            return message
    return _check_tokens(s.stop_token_ids, limits.vocab_size, "stop_token_ids")


def generate_error(msg: wire.Generate, limits: GenerateLimits) -> str | None:
    """Why this Generate must be refused, or None if the engine may take it."""
    rid = msg.request_id
    if not rid or len(rid) > MAX_REQUEST_ID_CHARS or not rid.isprintable():
        return f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} printable characters"
    prompt = msg.prompt_token_ids
    if not prompt:
        return "the prompt is empty"
    if len(prompt) >= limits.max_model_len:
        return f"the prompt has {len(prompt)} tokens; max_model_len is {limits.max_model_len}"
    bad = _check_sampling(msg.sampling, limits)
    if bad is not None:
        return bad
    if len(prompt) + msg.sampling.max_tokens > limits.max_model_len:
        return (
            f"prompt ({len(prompt)} tokens) + max_tokens ({msg.sampling.max_tokens}) "
            f"exceeds max_model_len={limits.max_model_len}"
        )
    return _check_tokens(prompt, limits.vocab_size, "the prompt")
