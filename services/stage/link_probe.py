"""The round trip from this host to the coordinator, for placement's link term.

Times StatusQuery -> Status exchanges on one DEALER (the coordinator answers them
on its I/O thread without touching the engine), after one untimed exchange that
pays for the connection and, with CURVE, the handshake.
"""

from __future__ import annotations

import os
import statistics
import time

import zmq

from shared import codec, curve, wire
from shared.settings import TransportSettings
from shared.sockets import make_socket

REPEATS = 5


def round_trip_s(
    address: str, transport: TransportSettings, repeats: int = REPEATS, timeout_s: float = 4.0
) -> float:
    """Median seconds of `repeats` status round trips to the coordinator at `address`.

    With CURVE (--secret-key, --coordinator-key) the key must be one the coordinator
    answers status queries from (a gateway's). TimeoutError when it does not answer.
    """
    keys = curve.ServiceKeys.load(transport.secret_key, transport.coordinator_key, True)
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, transport, curve=keys.client_of(keys.coordinator))
    try:
        sock.connect(address)
        times = [_exchange(sock, address, timeout_s) for _ in range(repeats + 1)]
    finally:
        sock.close(0)
        ctx.term()
    return statistics.median(times[1:])


def _exchange(sock: zmq.Socket, address: str, timeout_s: float) -> float:  # type: ignore[type-arg]
    nonce = int.from_bytes(os.urandom(4), "big")
    started = time.perf_counter()
    sock.send_multipart(codec.encode(wire.StatusQuery(nonce=nonce)))
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000)):
            break
        try:
            msg = codec.decode(sock.recv_multipart())
        except wire.WireError:
            continue
        if isinstance(msg, wire.Status) and msg.nonce == nonce:
            return time.perf_counter() - started
    raise TimeoutError(
        f"the coordinator at {address} did not answer a status query within {timeout_s:g} s; "
        "check --coordinator (and, with CURVE, --secret-key / --coordinator-key)"
    )
