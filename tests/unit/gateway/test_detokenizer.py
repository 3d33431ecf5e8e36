"""IncrementalDetokenizer with the real tokenizer: emoji and CJK never split."""

from __future__ import annotations

import pytest

from services.gateway.detokenizer import REPLACEMENT, IncrementalDetokenizer
from services.gateway.tokenization import Tokenizer

TEXTS = [
    "Hello 😀 你好世界 — naïve café 🎉🇫🇷 end",
    "👨‍👩‍👧‍👦 family, 日本語のテキスト, 한국어 텍스트",
    "plain ascii text with spaces   and\nnewlines\n",
    "🙂🙂🙂🙂🙂",
]


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer._hf.encode(text, add_special_tokens=False))


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("step", [1, 2, 3])
def test_deltas_join_to_the_full_text_and_never_split_characters(
    tokenizer: Tokenizer, text: str, step: int
) -> None:
    ids = encode(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer.decode, prompt_token_ids=[1, 9690, 198])
    deltas = [detok.push(ids[i : i + step]) for i in range(0, len(ids), step)]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert all(REPLACEMENT not in d for d in deltas)


def test_partial_character_is_held_until_completed(tokenizer: Tokenizer) -> None:
    ids = encode(tokenizer, "😀")
    assert len(ids) > 1  # byte-level BPE splits this emoji
    detok = IncrementalDetokenizer(tokenizer.decode)
    assert [detok.push([i]) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1:]) == "😀"


def test_flush_releases_a_dangling_partial_character(tokenizer: Tokenizer) -> None:
    ids = encode(tokenizer, "a😀")
    detok = IncrementalDetokenizer(tokenizer.decode)
    emitted = detok.push(ids[:-1])  # the emoji's last byte never arrives
    assert REPLACEMENT not in emitted
    assert detok.flush().endswith(REPLACEMENT)


def test_special_tokens_are_skipped(tokenizer: Tokenizer) -> None:
    eos = tokenizer.eos_token_id
    assert eos is not None
    detok = IncrementalDetokenizer(tokenizer.decode)
    out = detok.push(encode(tokenizer, "done")) + detok.push([eos]) + detok.flush()
    assert out == "done"
