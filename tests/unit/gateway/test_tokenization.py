"""Tokenizer: chat template, off-loop encoding, token bytes for logprobs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.gateway.tokenization import TemplateError, Tokenizer


def test_chat_template_renders_with_generation_prompt(tokenizer: Tokenizer) -> None:
    ids = asyncio.run(tokenizer.encode_chat([{"role": "user", "content": "hi"}]))
    text = str(tokenizer._hf.decode(ids))
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_encoding_runs_off_the_event_loop_thread(
    tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = tokenizer._encode_text_sync

    def spy(text: str, *rest: bool) -> list[int]:
        seen.append(threading.current_thread().name)
        return original(text, *rest)

    monkeypatch.setattr(tokenizer, "_encode_text_sync", spy)

    async def scenario() -> list[int]:
        return await tokenizer.encode_text("hello")

    assert asyncio.run(scenario()) == tokenizer._hf.encode("hello")
    assert seen and seen[0].startswith("tokenizer") and seen[0] != threading.main_thread().name


def test_template_errors_are_template_errors(tokenizer: Tokenizer) -> None:
    with pytest.raises(TemplateError):
        # The template concatenates content; a dict content makes jinja fail.
        asyncio.run(tokenizer.encode_chat([{"role": "user", "content": {"a": 1}}]))


def test_token_bytes_reassemble_multibyte_text(tokenizer: Tokenizer) -> None:
    text = " 😀 你好 café"
    ids = tokenizer._hf.encode(text, add_special_tokens=False)
    assert b"".join(tokenizer.token_bytes(i) for i in ids).decode() == text
    partial = [tokenizer.token_text(i) for i in ids if "\\x" in tokenizer.token_text(i)]
    assert partial  # split characters are shown as escapes, not U+FFFD
    assert tokenizer.token_text(tokenizer._hf.encode("hello")[0]) == "hello"
