"""One output sequence: token ids in, text deltas, logprobs and finish reason out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.gateway.detokenizer import IncrementalDetokenizer
from services.gateway.stop_strings import StopOptions, StopStringMatcher
from shared import wire

# JSON has no -inf; vLLM reports impossible tokens with this value too.
MIN_LOGPROB = -9999.0


class TokenTexts(Protocol):
    """What a sequence needs from the tokenizer (called on the event loop)."""

    eos_token_id: int | None

    def decode(self, token_ids: Sequence[int]) -> str: ...
    def decode_all(self, token_ids: Sequence[int]) -> str: ...
    def token_text(self, token_id: int) -> str: ...
    def token_bytes(self, token_id: int) -> bytes: ...


class TextOptions(StopOptions, Protocol):
    """What of a request shapes its choices' text (the request model is one); read-only."""

    def num_top_logprobs(self) -> int | None: ...

    @property
    def skip_special_tokens(self) -> bool: ...


@dataclass(frozen=True)
class Candidate:
    """A token with its log-probability, as shown to clients; immutable value."""

    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class LogprobEntry:
    """A sampled token's log-probability, top candidates, text offset; immutable value."""

    sampled: Candidate
    top: list[Candidate]
    text_offset: int


@dataclass
class SeqDelta:
    """What changed in one sequence after one output; made and used by one task."""

    index: int
    text: str
    num_new_tokens: int
    logprobs: list[LogprobEntry] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    invalid: bool = False  # the coordinator refused the request itself (400, not 503)


class SequenceState:
    """One sequence's text, stop strings, logprobs and finish; owned by its request's task."""

    def __init__(
        self,
        index: int,
        request_id: str,
        tokens: TokenTexts,
        prompt_token_ids: Sequence[int],
        options: TextOptions,
    ) -> None:
        self.index = index
        self.request_id = request_id
        self._tokens = tokens
        decode = tokens.decode if options.skip_special_tokens else tokens.decode_all
        self._detok = IncrementalDetokenizer(decode, prompt_token_ids)
        self._stops = StopStringMatcher.of(options)
        self._top_logprobs = options.num_top_logprobs()
        self._pending: list[LogprobEntry] = []
        self.num_tokens = 0
        self.token_ids: list[int] = []
        self.logprobs: list[LogprobEntry] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.invalid = False

    @property
    def text(self) -> str:
        """All text so far (stop string excluded)."""
        return self._stops.text

    @property
    def finished(self) -> bool:
        """The sequence has a finish reason or an error."""
        return self.finish_reason is not None or self.error is not None

    @property
    def stopped_by_string(self) -> bool:
        """A stop string ended the sequence (the coordinator does not know yet)."""
        return self._stops.stopped

    def process(self, out: wire.RequestOutput) -> SeqDelta:
        """Apply one coordinator output and return the client-visible change."""
        if self.finished:
            return SeqDelta(self.index, "", 0)
        self.num_tokens += len(out.token_ids)
        self.token_ids.extend(out.token_ids)
        new_entries = self._entries(out, len(self._stops.text))
        final = out.finish_reason is not None
        raw = self._detok.push(self._text_ids(out))
        if final:
            raw += self._detok.flush()
        text = self._stops.push(raw, final=final)
        if self._stops.stopped:
            self.finish_reason = "stop"
        elif out.finish_reason in ("stop", "length"):
            self.finish_reason = out.finish_reason
        elif out.finish_reason == "abort":
            self.error = out.error or "the coordinator aborted the request"
        elif out.finish_reason is not None:
            self.error = out.error or f"generation failed ({out.finish_reason})"
            self.invalid = out.invalid
        self._pending.extend(new_entries)
        entries: list[LogprobEntry] = []
        if text or self.finished:
            entries, self._pending = self._pending, []
            self.logprobs.extend(entries)
        return SeqDelta(
            self.index,
            text,
            len(out.token_ids),
            entries,
            self.finish_reason,
            self.error,
            self.invalid,
        )

    def _text_ids(self, out: wire.RequestOutput) -> list[int]:
        """The new tokens whose text joins the output.

        As vLLM, the token that stopped the sequence at the coordinator (EOS, or one of
        stop_token_ids: then stop_reason is its id) is left out unless stops are kept.
        """
        ids = out.token_ids
        by_token = bool(ids) and out.finish_reason == "stop"
        if by_token and (isinstance(out.stop_reason, int) or ids[-1] == self._tokens.eos_token_id):
            return ids if self._stops.keeps_stop else ids[:-1]
        return ids

    def _entries(self, out: wire.RequestOutput, offset: int) -> list[LogprobEntry]:
        if self._top_logprobs is None or not out.logprobs:
            return []
        entries = []
        for lp in out.logprobs:
            sampled = self._candidate(lp.token_id, lp.logprob)
            top = [self._candidate(t.token_id, t.logprob) for t in lp.top[: self._top_logprobs]]
            entries.append(LogprobEntry(sampled, top, offset))
            offset += len(self._tokens.token_bytes(lp.token_id).decode("utf-8", "ignore"))
        return entries

    def _candidate(self, token_id: int, logprob: float) -> Candidate:
        raw = self._tokens.token_bytes(token_id)
        return Candidate(self._tokens.token_text(token_id), max(logprob, MIN_LOGPROB), list(raw))
