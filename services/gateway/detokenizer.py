"""Incremental detokenization that never splits a multi-byte character.

The classic prefix/read-offset scheme (as in vLLM's detokenize_incrementally
and TGI): decode a short window of recent tokens twice, with and without the
newest ones, and emit the difference. Text ending in U+FFFD means the newest
token ends inside a UTF-8 sequence (byte-level BPE splits emoji and CJK
across tokens), so it is held back until the next token completes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"
# Tokens of prompt context decoded with the output: SentencePiece drops a
# leading space when a token is decoded alone, so we need a left neighbour.
PROMPT_CONTEXT_TOKENS = 5
# Held tokens normally complete a character within 4 tokens (UTF-8 is at most 4
# bytes), but byte-level tokens can chain partial characters. A tail still
# ending in U+FFFD after this many tokens is invalid output: let it through
# rather than re-decoding an ever-growing window.
MAX_HELD_TOKENS = 16

DecodeFn = Callable[[Sequence[int]], str]


class IncrementalDetokenizer:
    """Turns one sequence's token ids into text deltas; owned by its request's task."""

    def __init__(self, decode: DecodeFn, prompt_token_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        context = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)

    def push(self, token_ids: Sequence[int]) -> str:
        """Add new tokens; return the text that is now complete (may be "")."""
        # One token at a time, so a complete character is released as soon as it is.
        return "".join(self._push_one(token_id) for token_id in token_ids)

    def _push_one(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        held = len(self._ids) - self._read_offset
        if len(new_text) <= len(prefix_text):
            return ""
        if new_text.endswith(REPLACEMENT) and held < MAX_HELD_TOKENS:
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Text still held back; call once when the sequence ends."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]
