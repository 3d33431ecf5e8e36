"""Child-process bookkeeping of the benchmark: CPU seconds per session, stop on failure."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.processes import Children, session_cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_session_counts_its_children_cpu_time() -> None:
    # The leader waits on a child that burns 0.3 s of CPU, so the session's time is the child's.
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
            "time.sleep(30)\n",
        ],
        start_new_session=True,
    )
    try:
        seen = 0.0
        for _ in range(100):  # bounded: the child is done after 0.3 s of CPU
            seen = session_cpu_seconds(leader.pid)
            if seen >= 0.3:
                break
            time.sleep(0.1)
        assert seen >= 0.3
    finally:
        leader.kill()
        leader.wait()


def test_an_unknown_session_has_no_cpu_time() -> None:
    assert session_cpu_seconds(2**22 + 12345) == 0.0


def test_a_start_that_raises_stops_the_children_it_spawned(tmp_path: Path) -> None:
    children = Children(tmp_path)
    with pytest.raises(TimeoutError), children.stopped_on_error():
        children.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
        proc = children.procs["sleeper"]
        raise TimeoutError("the system did not come up")
    assert children.procs == {}
    assert proc.poll() is not None


def test_a_start_that_succeeds_keeps_its_children(tmp_path: Path) -> None:
    children = Children(tmp_path)
    try:
        with children.stopped_on_error():
            children.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {})
        assert children.procs["sleeper"].poll() is None
    finally:
        children.stop()
