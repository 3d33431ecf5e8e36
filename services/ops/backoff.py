"""Pure restart backoff for supervised child processes (used by services/ops/launcher.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    """Delay before the next restart of one child; owned by the launcher's main thread.

    The delay doubles with each quick death (a child that lived less than
    `stable_after_s`) up to `max_s`, and falls back to `initial_s` once a child
    has run for `stable_after_s`.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 60.0
    _next_s: float = 0.0

    def on_death(self, lived_s: float) -> float:
        """Seconds to wait before restarting a child that died after `lived_s` seconds."""
        if self._next_s == 0.0 or lived_s >= self.stable_after_s:
            self._next_s = self.initial_s
        else:
            self._next_s = min(self.max_s, self._next_s * 2)
        return self._next_s
