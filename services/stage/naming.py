"""A stage's default name: unique without --name (pure logic but for reading host and pid).

`host-pid` (the host's first name label and the stage's process id): two stages on
one host differ by pid, stages on different hosts by host, and a process in the
same container (the health check) can work the name out again from /proc.
"""

from __future__ import annotations

import os
import re
import socket

MAX_HOST_CHARS = 40


def host_label(hostname: str) -> str:
    """The first label of a host name, lower case, only letters, digits and dashes."""
    label = hostname.split(".", 1)[0].lower()
    label = re.sub(r"[^a-z0-9-]+", "-", label).strip("-")[:MAX_HOST_CHARS].strip("-")
    return label or "stage"


def unique_stage_name(hostname: str, pid: int) -> str:
    """The name of a stage started without --name on `hostname` as process `pid`."""
    return f"{host_label(hostname)}-{pid}"


def default_stage_name() -> str:
    """This process's unique stage name (--name, when given, wins over it)."""
    return unique_stage_name(socket.gethostname(), os.getpid())
