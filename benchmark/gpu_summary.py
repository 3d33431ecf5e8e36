"""benchmark/gpu_bench.py's bookkeeping: each phase's deadline and the summary files."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark import gpu_report


class Deadline:
    """Seconds left of one phase's budget; used by the bench's main thread."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = clock() + seconds

    def left(self, at_most: float | None = None) -> float:
        """Seconds left (never below 1, so a subprocess timeout stays valid), capped."""
        left = max(1.0, self.end - self.clock())
        return left if at_most is None else min(left, at_most)

    def expired(self) -> bool:
        return self.clock() >= self.end


class Summary:
    """summary.json and summary.md, rewritten after every step; main thread only."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "settings": settings,
            "labels": {},
            "loads": {},
            "ready_s": {},
            "rejoin_s": {},
            "greedy": {},
            "greedy_diff": {},
            "errors": {},
            "phase_s": {},
        }

    def save(self) -> None:
        self.data["ratios"] = gpu_report.ratios(self.data)
        (self.out / "summary.json").write_text(json.dumps(self.data, indent=1))
        (self.out / "summary.md").write_text(gpu_report.markdown(self.data))

    def phase(self, name: str, seconds: float, fn: Callable[[Deadline], None]) -> None:
        """Run one phase under its deadline; record its error and duration, never raise."""
        started = time.monotonic()
        try:
            fn(Deadline(seconds))
        except Exception:
            self.error(name, traceback.format_exc())
        self.data["phase_s"][name] = round(time.monotonic() - started, 1)
        self.save()

    def error(self, name: str, text: str) -> None:
        self.data["errors"][name] = text[-3000:]
        print(f"{name} FAILED\n{text[-3000:]}", flush=True)
        self.save()
