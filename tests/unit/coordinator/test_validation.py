"""Generate checks on the coordinator: token ids, lengths and sampling values."""

from __future__ import annotations

import pytest

from services.coordinator.validation import GenerateLimits, generate_error
from shared import wire

LIMITS = GenerateLimits(vocab_size=100, max_model_len=64)


def generate(prompt: list[int] | None = None, **sampling: object) -> wire.Generate:
    spec = wire.SamplingSpec(**{"max_tokens": 8, **sampling})  # type: ignore[arg-type]
    return wire.Generate(
        request_id="r-1", prompt_token_ids=[1, 2, 3] if prompt is None else prompt, sampling=spec
    )


def test_a_valid_request_passes() -> None:
    assert generate_error(generate(temperature=0.0, top_k=5, logprobs=3), LIMITS) is None


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        (generate([1, 100]), "token id 100"),
        (generate([-1]), "token id -1"),
        (generate([]), "empty"),
        (generate(list(range(64))), "max_model_len"),
        (generate([1] * 60), "exceeds max_model_len"),
        (generate(top_k=-9), "top_k"),
        (generate(top_k=101), "top_k"),
        (generate(temperature=-1.0), "temperature"),
        (generate(temperature=float("nan")), "temperature"),
        (generate(top_p=0.0), "top_p"),
        (generate(min_p=2.0), "min_p"),
        (generate(repetition_penalty=0.0), "repetition_penalty"),
        (generate(presence_penalty=3.0), "presence_penalty"),
        (generate(max_tokens=0), "max_tokens"),
        (generate(min_tokens=9), "min_tokens"),
        (generate(logprobs=21), "logprobs"),
        (generate(seed=2**64), "seed"),
        (generate(stop_token_ids=[5, 1000]), "token id 1000"),
    ],
)
def test_invalid_values_are_named(msg: wire.Generate, fragment: str) -> None:
    error = generate_error(msg, LIMITS)
    assert error is not None and fragment in error


def test_request_id_must_be_short_and_printable() -> None:
    msg = generate()
    for bad in ("", "x" * 257, "a\nb"):
        msg.request_id = bad
        assert generate_error(msg, LIMITS) is not None
