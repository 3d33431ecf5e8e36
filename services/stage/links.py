"""The stage's outgoing activation sockets: to the next hop, and round the token ring.

Both are DEALERs a Configure (re)points; with CURVE each is a client of the
peer's server key. Sends never block the main thread on a dead peer: the
coordinator rebuilds the chain when that peer's heartbeats stop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from shared import codec, curve, wire
from shared.dropped import drop
from shared.settings import TransportSettings
from shared.sockets import make_socket

log = logging.getLogger("layerbus.stage")


class NextHop:
    """The DEALER to the next stage, its redialer and the sends in flight; main thread."""

    def __init__(
        self,
        ctx: zmq.Context,  # type: ignore[type-arg]
        transport: TransportSettings,
        keys: curve.ServiceKeys,
        name: str,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.keys = keys
        self.name = name
        self.sock: zmq.Socket | None = None  # type: ignore[type-arg]
        self.redialer: curve.Redialer | None = None
        self.pending_sends: list[zmq.MessageTracker] = []
        self.address = ""
        self.key = ""

    def open(self, address: str, key: str) -> None:
        """(Re)connect to the next hop; what was queued for the old one is dropped."""
        if self.redialer is not None:
            self.redialer.close()
            self.redialer = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        self.pending_sends.clear()
        self.address, self.key = address, key
        if not address:
            return
        nxt = self.keys.client_of(key.encode()) if self.keys.enabled else None
        self.sock = make_socket(self.ctx, zmq.DEALER, self.transport, curve=nxt)
        self.sock.connect(address)
        if nxt is not None:
            self.redialer = curve.Redialer(self.sock, address)

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def tick(self, now: float) -> None:
        """From the main loop: dial again a hop whose CURVE handshake was refused."""
        if self.redialer is not None:
            self.redialer.tick(now)

    def send(self, frames: list[Any]) -> zmq.MessageTracker | None:
        """Hand a step to the socket without copying; the tracker says when it left."""
        assert self.sock is not None
        tracker = self.sock.send_multipart(frames, copy=False, track=True)
        if tracker is not None:
            self.pending_sends.append(tracker)
        return tracker

    def wait_for_sends(self) -> None:
        """The previous activations must be on the wire before the runner reuses memory.

        A next hop that takes nothing for several heartbeat intervals is gone (the
        coordinator will rebuild the chain): what is queued for it is dropped and the
        hop dialled again, so this loop never blocks on a dead peer.
        """
        patience = self.transport.heartbeat_interval_s * self.transport.heartbeat_misses
        deadline = time.monotonic() + patience
        for sent in self.pending_sends:
            try:
                sent.wait(timeout=max(0.0, deadline - time.monotonic()))
            except zmq.NotDone:
                log.warning(
                    "%s: next hop %s took no activations for %.0f s; dialling again",
                    self.name,
                    self.address,
                    patience,
                )
                self.open(self.address, self.key)
                break
        self.pending_sends.clear()

    def close(self) -> None:
        if self.redialer is not None:
            self.redialer.close()
        if self.sock is not None:
            self.sock.close()


class RingLink:
    """The last stage's DEALER round the token ring to the first stage; main thread."""

    def __init__(
        self,
        ctx: zmq.Context,  # type: ignore[type-arg]
        transport: TransportSettings,
        keys: curve.ServiceKeys,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.keys = keys
        self.sock: zmq.Socket | None = None  # type: ignore[type-arg]
        self.address = ""
        self.key = ""

    def open(self, address: str, key: str) -> None:
        """Point the ring at a chain's first stage ("" : this stage sends no ring tokens).

        Dialled at the first send: the first stage is configured after this one
        (last first), and with CURVE it admits this stage only from then on.
        """
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        self.address, self.key = address, key

    @property
    def active(self) -> bool:
        return bool(self.address)

    def send(self, msg: wire.Tokens) -> None:
        """Send one step's sampled tokens round the ring to the first stage."""
        if self.sock is None:
            key = self.keys.client_of(self.key.encode()) if self.keys.enabled else None
            self.sock = make_socket(self.ctx, zmq.DEALER, self.transport, curve=key)
            self.sock.connect(self.address)
        try:
            self.sock.send_multipart(codec.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            # Thousands of messages queued: the first stage is gone, and the
            # coordinator rebuilds the chain when its heartbeats stop.
            drop("stage-data", "ring-full", f"ring tokens of step {msg.step_id}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
