"""The engine thread's hand-over to the ROUTER: every message arrives whole, in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from services.coordinator.outbox import DRAIN_LIMIT, Outbox
from shared import codec, wire


class Router:
    """A ROUTER as forward() uses it: records frames; refuses identities in `gone`."""

    def __init__(self, gone: tuple[bytes, ...] = ()) -> None:
        self.sent: list[list[bytes]] = []
        self.gone = gone

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        assert flags == zmq.NOBLOCK, "forward() must never block on a peer"
        if frames[0] in self.gone:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append(frames)


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    ctx = zmq.Context()
    box = Outbox(ctx)
    yield box
    box.close()
    ctx.destroy(linger=0)


def forward_until(box: Outbox, router: Router, count: int) -> None:
    """Forward until `count` messages reached the router, waiting for queued ones."""
    while len(router.sent) < count:
        box.pull.poll()  # blocks until a message is queued
        box.forward(router)  # type: ignore[arg-type]


def test_messages_from_other_threads_reach_the_router_as_frames(outbox: Outbox) -> None:
    def engine(name: bytes) -> None:
        outbox.send(name, wire.Reset(generation=len(name)))

    threads = [threading.Thread(target=engine, args=(n,)) for n in (b"a", b"bb")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    router = Router()
    forward_until(outbox, router, 2)
    got = {frames[0]: codec.decode(frames[1:]) for frames in router.sent}
    assert got == {b"a": wire.Reset(generation=1), b"bb": wire.Reset(generation=2)}


def test_a_gone_peer_is_skipped_and_the_rest_still_sent(outbox: Outbox) -> None:
    for identity in (b"x", b"gone", b"y"):
        outbox.send(identity, wire.Shutdown(reason=identity.decode()))
    router = Router(gone=(b"gone",))
    forward_until(outbox, router, 2)
    assert [frames[0] for frames in router.sent] == [b"x", b"y"]


def test_one_forward_moves_at_most_the_drain_limit(outbox: Outbox) -> None:
    # The I/O loop must get back to the ROUTER and its heartbeats under a flood.
    for seq in range(DRAIN_LIMIT + 1):
        outbox.send(b"s", wire.Heartbeat(name="coordinator", seq=seq))
    router = Router()
    outbox.pull.poll()
    outbox.forward(router)  # type: ignore[arg-type]
    assert len(router.sent) == DRAIN_LIMIT
    forward_until(outbox, router, DRAIN_LIMIT + 1)
    seqs = [codec.decode(frames[1:]).seq for frames in router.sent]  # type: ignore[attr-defined]
    assert seqs == list(range(DRAIN_LIMIT + 1)), "messages were reordered"
