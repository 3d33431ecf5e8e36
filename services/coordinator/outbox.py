"""Messages from the engine thread to the ROUTER, which only the I/O thread may touch.

The engine thread pushes [identity, *frames] over an inproc PUSH (one per thread);
the I/O thread drains the PULL end into the ROUTER, never blocking on a peer.
"""

from __future__ import annotations

import logging
import threading

import msgspec
import zmq

from shared import codec

log = logging.getLogger("layerbus.coordinator")

OUTBOX = "inproc://layerbus-coordinator-outbox"

# Messages moved per drain: the I/O loop also reads the ROUTER and keeps heartbeats.
DRAIN_LIMIT = 1000


class Outbox:
    """The inproc hand-over to the ROUTER: send() on any thread, forward() on the I/O thread."""

    def __init__(self, ctx: zmq.Context) -> None:  # type: ignore[type-arg]
        self.ctx = ctx
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(OUTBOX)
        self._local = threading.local()

    def send(self, identity: bytes, msg: msgspec.Struct) -> None:
        """Queue a message for the I/O thread to send (the calling thread's own PUSH)."""
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(OUTBOX)
            self._local.push = sock
        sock.send_multipart([identity, *codec.encode(msg)])

    def forward(self, router: zmq.Socket) -> None:  # type: ignore[type-arg]
        """Move what is queued to the ROUTER; a message to a gone or full peer is dropped."""
        for _ in range(DRAIN_LIMIT):
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                # NOBLOCK: one slow or gone peer must never stall this loop.
                router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as err:
                log.debug("dropped message to %r: %s", frames[0], err)

    def close(self) -> None:
        self.pull.close()
