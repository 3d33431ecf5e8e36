"""Generate checks on the coordinator: what the typed decode cannot check, and answers to
Generates the decode refused (ranges: tests/unit/shared/test_wire.py)."""

from __future__ import annotations

import pytest

from services.coordinator.validation import (
    GenerateLimits,
    RefusedGenerate,
    generate_error,
    invalid_answer,
    not_ready_answer,
    refused_generate,
    token_id_fields,
)
from shared import codec, wire

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
        (generate(list(range(64))), "max_model_len"),
        (generate([1] * 60), "exceeds max_model_len"),
        (generate(top_k=101), "top_k"),
        (generate(min_tokens=9), "min_tokens"),
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


def test_a_generate_the_decode_refuses_is_answered_with_the_field_named() -> None:
    frames = codec.encode(generate(temperature=-1.0))
    with pytest.raises(wire.WireError) as err:
        codec.decode(frames)
    refused = refused_generate(frames, err.value)
    assert isinstance(refused, RefusedGenerate)
    assert refused.request_id == "r-1" and "temperature" in refused.error


def test_other_malformed_messages_are_only_dropped() -> None:
    err = wire.WireError("bad")
    assert refused_generate(codec.encode(wire.Abort(["r-1"])), err) is None
    assert refused_generate([b"\x01", b"not msgpack"], err) is None
    assert refused_generate([b"\x01"], err) is None


def test_every_token_id_field_of_the_sampling_spec_is_checked_by_name() -> None:
    assert "stop_token_ids" in token_id_fields(wire.SamplingSpec)
    assert "temperature" not in token_id_fields(wire.SamplingSpec)


def test_logit_bias_token_ids_must_be_in_the_vocabulary() -> None:
    assert generate_error(generate(logit_bias={99: 1.0}), LIMITS) is None
    error = generate_error(generate(logit_bias={5: 1.0, 100: -1.0}), LIMITS)
    assert error is not None and "logit_bias" in error and "token id 100" in error


def test_allowed_token_ids_must_be_in_the_vocabulary() -> None:
    assert generate_error(generate(allowed_token_ids=[0, 99]), LIMITS) is None
    error = generate_error(generate(allowed_token_ids=[1, 100]), LIMITS)
    assert error is not None and "allowed_token_ids" in error


def test_a_refusal_says_the_request_is_at_fault_and_ends_it() -> None:
    [out] = invalid_answer("r" * 300, "top_k must be 0 (off) or in [1, 100], got 101").items
    assert (out.request_id, out.finish_reason, out.invalid) == ("r" * 256, "error", True)
    assert out.error == "top_k must be 0 (off) or in [1, 100], got 101" and out.token_ids == []


def test_not_ready_is_the_services_fault_and_carries_the_detail() -> None:
    [out] = not_ready_answer("r-1", "waiting for stages").items
    assert (out.request_id, out.finish_reason, out.invalid) == ("r-1", "error", False)
    assert out.error == "not ready: waiting for stages"
