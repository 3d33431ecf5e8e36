"""Messages a receiver throws away: counted in one metric and logged, never fatal.

`layerbus_dropped_messages_total{socket,reason}` counts unknown, malformed,
unauthorized, invalid and stale messages per receiving socket. Coordinator
and stages expose it on their metrics port (shared/metrics_endpoint.py).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter

log = logging.getLogger("layerbus.dropped")

DROPPED = Counter(
    "layerbus_dropped_messages",
    "Messages dropped by a receiver, by socket and reason",
    ["socket", "reason"],
)

# What each receiving socket drops: these series exist (at 0) from start-up, so a
# dashboard or alert on them has data before the first drop.
REASONS: dict[str, tuple[str, ...]] = {
    "coordinator": ("malformed", "invalid", "step-result", "unauthenticated", "role", "identity"),
    "stage-control": ("malformed",),
    "stage-data": ("malformed", "invalid", "unauthorized", "stale", "ring-full"),
}

# One log line per (socket, reason) every this many seconds: a flood of bad
# messages must not turn into a flood of log lines.
LOG_EVERY_S = 5.0
_last_logged: dict[tuple[str, str], float] = {}


def drop(socket: str, reason: str, detail: str) -> None:
    """Count one dropped message; log it unless that kind was logged recently.

    detail must never contain prompt text or key material.
    """
    DROPPED.labels(socket=socket, reason=reason).inc()
    now = time.monotonic()
    if now - _last_logged.get((socket, reason), -LOG_EVERY_S) >= LOG_EVERY_S:
        _last_logged[(socket, reason)] = now
        log.warning("dropped a message on %s (%s): %s", socket, reason, detail)


def export_zeros(*sockets: str) -> None:
    """Create the counters of these sockets' known reasons (REASONS) at 0."""
    for socket in sockets:
        for reason in REASONS[socket]:
            DROPPED.labels(socket=socket, reason=reason)


def count(socket: str, reason: str) -> float:
    """Messages dropped so far on socket for reason (tests and status)."""
    return float(DROPPED.labels(socket=socket, reason=reason)._value.get())
