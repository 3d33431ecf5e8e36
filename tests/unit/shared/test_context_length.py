"""The one context-length rule: prompt + max_tokens within max_model_len."""

from __future__ import annotations

import pytest

from shared.context_length import context_length_error


@pytest.mark.parametrize(
    ("prompt", "max_tokens"), [(10, 54), (63, 1), (63, None), (1, None), (1, 63)]
)
def test_requests_that_fit_pass(prompt: int, max_tokens: int | None) -> None:
    assert context_length_error(prompt, max_tokens, 64) is None


def test_a_prompt_plus_completion_too_long_is_explained() -> None:
    error = context_length_error(60, 8, 64)
    assert error is not None
    assert "64 tokens" in error and "68 tokens (60 in the prompt, 8 for the completion)" in error
    assert "max_model_len" in error


@pytest.mark.parametrize("max_tokens", [None, 1])
def test_a_prompt_that_leaves_no_room_is_refused(max_tokens: int | None) -> None:
    error = context_length_error(64, max_tokens, 64)
    assert error is not None and "max_model_len" in error
