"""The GPU benchmark's bookkeeping: phases bounded in time, errors recorded, the next runs."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.gpu_summary import Deadline, Summary


def test_a_failed_phase_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    summary = Summary(tmp_path, {"platform": "cpu", "model_name": "tiny"})
    ran = []

    def broken(deadline: Deadline) -> None:
        raise RuntimeError("stage exited with 1")

    def fine(deadline: Deadline) -> None:
        ran.append(deadline.left())

    summary.phase("layerbus-1", 60, broken)
    summary.phase("layerbus-2-shared", 60, fine)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert "stage exited with 1" in saved["errors"]["layerbus-1"]
    assert "layerbus-2-shared" not in saved["errors"] and ran
    assert set(saved["phase_s"]) == {"layerbus-1", "layerbus-2-shared"}


def test_deadline_counts_down_and_caps_each_wait() -> None:
    now = [100.0]
    deadline = Deadline(30, clock=lambda: now[0])
    assert deadline.left() == 30 and deadline.left(at_most=10) == 10
    now[0] = 125.0
    assert deadline.left(at_most=10) == 5 and not deadline.expired()
    now[0] = 131.0
    assert deadline.expired() and deadline.left() == 1.0  # still a valid subprocess timeout
