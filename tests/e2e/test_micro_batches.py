"""Acceptance (issue 6): micro-batches keep every stage busy under load."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.recovery_helpers import run_streams, status

pytestmark = pytest.mark.e2e


def test_micro_batches_fill_the_pipeline(two_stages: Cluster) -> None:
    before = status(two_stages)
    # One per stage to start; the coordinator may have raised it under earlier load
    # (services/coordinator/micro_batch_control.py), never above its cap.
    coordinator = before["coordinator"]
    assert 2 <= coordinator["micro_batches"] <= coordinator["max_micro_batches"], coordinator
    snapshots: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            snapshots.append(status(two_stages))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = run_streams(two_stages.url, 40, 48)
    finally:
        done.set()
        watcher.join()
    assert all(r.error is None and r.finish == "length" for r in results)

    # Steady decode: every request admitted, at least 4 x M running.
    steady = [
        s
        for s in snapshots
        if s["coordinator"]["num_waiting"] == 0
        and s["coordinator"]["num_running"] >= 4 * s["coordinator"]["micro_batches"]
    ]
    assert len(steady) >= 2, "the load never reached a steady decode phase"
    first, last = steady[0]["coordinator"], steady[-1]["coordinator"]
    steps = last["steps"] - first["steps"]
    empty = last["empty_steps"] - first["empty_steps"]
    assert steps > 0
    assert empty / steps < 0.05, f"{empty} empty steps of {steps}"
    assert max(s["coordinator"]["batches_in_flight"] for s in steady) >= 2
    for s in steady:
        c = s["coordinator"]
        assert len(c["micro_batch_sizes"]) == c["micro_batches"], c
    # While all 40 run, the micro-batches are balanced (finishing requests may unbalance
    # them for a turn; the heavier one then hands requests over). A micro-batch added
    # while serving starts empty and fills over a few turns: look 2 s after the last raise.
    history = [t["coordinator"]["micro_batches"] for t in snapshots]
    settled = []
    for s in steady:
        m = s["coordinator"]["micro_batches"]
        at = next(i for i, t in enumerate(snapshots) if t is s)
        if at >= 10 and all(x == m for x in history[at - 10 : at + 1]):
            settled.append(s)
    sizes = [s["coordinator"]["micro_batch_sizes"] for s in settled]
    sizes = [z for z in sizes if sum(z) == 40]
    assert sizes, "no steady snapshot with all 40 running after M settled"
    unbalanced = [z for z in sizes if max(z) - min(z) > 2]
    assert not unbalanced, unbalanced

    after = status(two_stages)
    for old, new in zip(before["stages"], after["stages"], strict=True):
        assert new["steps"] > old["steps"]
        assert new["busy_s"] > old["busy_s"]
