"""Stop strings: find them in generated text, truncate there, hold back partial matches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StopOptions(Protocol):
    """What of a request shapes its stop strings (the request model is one); read-only."""

    def stop_strings(self) -> list[str]: ...

    @property
    def include_stop_str_in_output(self) -> bool: ...


class StopStringMatcher:
    """Releases text that cannot start a stop string; owned by one sequence's task.

    The stop string itself is not part of the output (OpenAI semantics) unless keep_stop
    (vLLM's include_stop_str_in_output): then the text ends right after it, as in vLLM,
    and nothing is held back (what could start a stop is output either way).
    """

    def __init__(self, stops: Sequence[str], keep_stop: bool = False) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._emitted = 0
        self.stopped = False
        # The stop (string, or the token that stopped the sequence) is part of the text.
        self.keeps_stop = keep_stop

    @classmethod
    def of(cls, options: StopOptions) -> StopStringMatcher:
        """The matcher for one sequence of a request."""
        return cls(options.stop_strings(), options.include_stop_str_in_output)

    def push(self, delta: str, final: bool = False) -> str:
        """Append generated text; return what may be sent now.

        After a stop string is found, `stopped` is True, `text` ends right
        before it (after it when keeping stops), and later calls return "".
        """
        if self.stopped:
            return ""
        search_from = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        hit = self._earliest_stop(search_from)
        if hit is not None:
            self.text = self.text[: hit[1] if self.keeps_stop else hit[0]]
            self.stopped = True
            return self._release(len(self.text))
        if final:
            return self._release(len(self.text))
        return self._release(len(self.text) - self._partial_match_length())

    def _earliest_stop(self, search_from: int) -> tuple[int, int] | None:
        """(start, end) of the stop to cut at: the earliest to start, or when stops are kept
        the earliest to end (vLLM's rule); None if there is none."""
        hits = [(i, i + len(s)) for s in self._stops if (i := self.text.find(s, search_from)) >= 0]
        if not hits:
            return None
        return min(hits, key=lambda h: h[1]) if self.keeps_stop else min(hits)

    def _partial_match_length(self) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
        if self.keeps_stop:
            return 0
        for k in range(min(self._longest - 1, len(self.text) - self._emitted), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self.text[self._emitted : end]
        self._emitted = end
        return out
