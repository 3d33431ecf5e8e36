"""The stage's outgoing activation sockets over loopback (services/stage/links.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq

from services.stage.links import NextHop, RingLink
from shared import codec, curve, dropped, wire
from shared.settings import TransportSettings

# A hop that takes nothing for one 50 ms interval is given up on.
QUICK = TransportSettings(heartbeat_interval_s=0.05, heartbeat_misses=1, linger_ms=0)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:  # type: ignore[type-arg]
    context = zmq.Context()
    yield context
    context.term()


def receiver(ctx: zmq.Context) -> tuple[zmq.Socket, str]:  # type: ignore[type-arg]
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


@pytest.fixture
def nobody_listening() -> Iterator[str]:
    """An address that refuses connections for the whole test: a bound TCP port that never
    listens. (A closed ZeroMQ listener would not do: its close is asynchronous, and a busy
    machine can still accept the dial.)"""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{held.getsockname()[1]}"


def test_steps_reach_the_next_hop_and_their_sends_complete(ctx: zmq.Context) -> None:  # type: ignore[type-arg]
    sink, address = receiver(ctx)
    hop = NextHop(ctx, QUICK, curve.ServiceKeys(), "s")
    try:
        assert not hop.connected
        hop.open(address, "")
        assert hop.connected
        hop.send([*codec.encode(wire.Reset(generation=1)), b"tensor bytes"])
        assert sink.poll(10_000), "the step never arrived"
        frames = sink.recv_multipart()
        assert codec.decode(frames[1:3]) == wire.Reset(generation=1)
        assert frames[3] == b"tensor bytes"
        sock_before = hop.sock
        hop.wait_for_sends()
        assert hop.pending_sends == [] and hop.sock is sock_before  # no redial needed
    finally:
        hop.close()
        sink.close()


def test_a_next_hop_that_takes_nothing_is_dialled_again(
    ctx: zmq.Context,  # type: ignore[type-arg]
    nobody_listening: str,
) -> None:
    hop = NextHop(ctx, QUICK, curve.ServiceKeys(), "s")
    address = nobody_listening
    try:
        hop.open(address, "")
        # Above pyzmq's copy threshold (64 KiB), so the frame is sent without a copy
        # and its tracker finishes only once it is written out.
        hop.send([*codec.encode(wire.Reset(generation=1)), bytes(1 << 20)])
        assert len(hop.pending_sends) == 1
        stuck = hop.sock
        hop.wait_for_sends()  # gives up after one heartbeat interval
        assert hop.pending_sends == []
        assert hop.sock is not stuck and hop.sock is not None and hop.address == address
    finally:
        hop.close()


def test_opening_no_address_leaves_no_next_hop(ctx: zmq.Context) -> None:  # type: ignore[type-arg]
    sink, address = receiver(ctx)
    hop = NextHop(ctx, QUICK, curve.ServiceKeys(), "s")
    try:
        hop.open(address, "")
        hop.open("", "")
        assert not hop.connected and hop.address == ""
    finally:
        hop.close()
        sink.close()


def test_the_ring_dials_at_its_first_send(ctx: zmq.Context) -> None:  # type: ignore[type-arg]
    first, address = receiver(ctx)
    ring = RingLink(ctx, QUICK, curve.ServiceKeys())
    try:
        assert not ring.active
        ring.open(address, "")
        assert ring.active and ring.sock is None  # the first stage may not admit it yet
        tokens = wire.Tokens(step_id=3, generation=1, req_ids=["a"], sampled_token_ids=[[9]])
        ring.send(tokens)
        assert first.poll(10_000), "the tokens never arrived"
        assert codec.decode(first.recv_multipart()[1:]) == tokens
        ring.open("", "")  # a new chain: this stage sends no ring tokens
        assert not ring.active and ring.sock is None
    finally:
        ring.close()
        first.close()


def test_a_full_ring_drops_tokens_instead_of_blocking(
    ctx: zmq.Context,  # type: ignore[type-arg]
    nobody_listening: str,
) -> None:
    ring = RingLink(ctx, QUICK.model_copy(update={"hwm": 1}), curve.ServiceKeys())
    try:
        ring.open(nobody_listening, "")
        before = dropped.count("stage-data", "ring-full")
        for step in range(5):
            ring.send(wire.Tokens(step_id=step, generation=1))
        assert dropped.count("stage-data", "ring-full") > before
    finally:
        ring.close()
