"""The one place that creates ZeroMQ sockets and sets their options."""

from __future__ import annotations

import zmq

from shared.curve import CurveOptions
from shared.settings import TransportSettings


def make_socket(
    ctx: zmq.Context,  # type: ignore[type-arg]
    kind: int,
    transport: TransportSettings,
    *,
    identity: bytes | None = None,
    curve: CurveOptions | None = None,
    max_message_bytes: int | None = None,
) -> zmq.Socket:  # type: ignore[type-arg]
    """A socket with LINGER, high-water marks, MAXMSGSIZE and, for ROUTER, ROUTER_MANDATORY.

    curve makes it a CURVE server or client (shared/curve.py); max_message_bytes
    overrides the control-message cap for sockets that carry activations.
    """
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, transport.linger_ms)
    sock.setsockopt(zmq.SNDHWM, transport.hwm)
    sock.setsockopt(zmq.RCVHWM, transport.hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes or transport.max_message_bytes)
    if curve is not None:
        curve.apply(sock)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A restarted peer with the same identity replaces the old connection.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    return sock
