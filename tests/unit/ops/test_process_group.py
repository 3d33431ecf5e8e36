"""stop_processes: SIGTERM first, SIGKILL after the grace period, the whole group if asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from services.ops.process_group import stop_processes

POLITE = "import time; time.sleep(60)"
# Ignores SIGTERM; its own child (same group) ignores it too.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "p = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
    " signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)']);"
    "print(p.pid, flush=True); time.sleep(60)"
)


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_polite_process_ends_with_sigterm() -> None:
    proc = spawn(POLITE)
    stop_processes([proc], grace_s=30)
    assert proc.returncode == -15


def test_a_stubborn_group_is_killed_after_the_grace_period() -> None:
    proc = spawn(STUBBORN)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    proc.stdout.readline()  # the grandchild ignores SIGTERM from now on
    stop_processes([proc], grace_s=0.5)
    assert proc.returncode == -9
    while alive(grandchild):  # SIGKILL was sent to the group; it lands in a moment
        time.sleep(0.01)
    proc.stdout.close()


def test_without_group_only_the_child_is_signalled() -> None:
    proc = spawn(STUBBORN)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    proc.stdout.readline()
    stop_processes([proc], grace_s=0.5, group=False)
    assert proc.returncode == -9 and alive(grandchild)
    os.kill(grandchild, signal.SIGKILL)
    proc.stdout.close()


def test_exited_processes_are_left_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    stop_processes([proc], grace_s=1)
    assert proc.returncode == 0
