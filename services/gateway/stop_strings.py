"""Stop strings: find them in generated text, truncate there, hold back partial matches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StopOptions(Protocol):
    """What of a request shapes its stop strings (the request model is one); read-only."""

    def stop_strings(self) -> list[str]: ...


class StopStringMatcher:
    """Releases text that cannot start a stop string; owned by one sequence's task.

    The stop string itself is never part of the output (OpenAI semantics).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._emitted = 0
        self.stopped = False
        # The stop (string, or the token that stopped the sequence) is part of the text.
        self.keeps_stop = False

    @classmethod
    def of(cls, options: StopOptions) -> StopStringMatcher:
        """The matcher for one sequence of a request."""
        return cls(options.stop_strings())

    def push(self, delta: str, final: bool = False) -> str:
        """Append generated text; return what may be sent now.

        After a stop string is found, `stopped` is True, `text` ends right
        before it, and later calls return "".
        """
        if self.stopped:
            return ""
        search_from = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        hit = self._earliest_stop(search_from)
        if hit is not None:
            self.text = self.text[:hit]
            self.stopped = True
            return self._release(len(self.text))
        if final:
            return self._release(len(self.text))
        return self._release(len(self.text) - self._partial_match_length())

    def _earliest_stop(self, search_from: int) -> int | None:
        hits = [i for s in self._stops if (i := self.text.find(s, search_from)) >= 0]
        return min(hits) if hits else None

    def _partial_match_length(self) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
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
