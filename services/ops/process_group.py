"""Stop child processes: SIGTERM, a grace period, then SIGKILL; one helper for every caller.

Used by `layerbus serve`'s launcher, the benchmark's child processes and the test clusters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any


def _send(proc: subprocess.Popen[Any], sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass  # it exited (and was reaped) in between


def stop_processes(
    procs: Iterable[subprocess.Popen[Any]], grace_s: float, *, group: bool = True
) -> None:
    """SIGTERM each process still running, SIGKILL each that outlives grace_s, wait for all.

    group: signal the child's whole process group (a child started with
    start_new_session=True, so its own children go too); else the child alone.
    The grace period counts once, from the first SIGTERM, however many processes stop.
    """
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            _send(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _send(proc, signal.SIGKILL, group)
            proc.wait()
