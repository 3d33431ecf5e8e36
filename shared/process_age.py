"""How long this process has existed: start-up logs say where a slow start goes."""

from __future__ import annotations

import os
from pathlib import Path


def process_age_s(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process was started (exec'd), or None where /proc cannot say."""
    try:
        stat = (proc / "self" / "stat").read_text()
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # Field 22 (starttime, clock ticks after boot); the command name before it may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return None
    return max(0.0, uptime - started)


def age_note(proc: Path = Path("/proc")) -> str:
    """' (process up 12.3 s)' for a log line, or '' where the age is unknown."""
    age = process_age_s(proc)
    return "" if age is None else f" (process up {age:.1f} s)"
