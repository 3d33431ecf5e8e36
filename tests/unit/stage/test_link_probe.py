"""The round trip to the coordinator, timed against a loopback stand-in."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from services.stage.link_probe import round_trip_s
from shared import codec, wire
from shared.settings import TransportSettings


def status(nonce: int) -> wire.Status:
    return wire.Status(nonce=nonce, ready=True, model="m", max_model_len=1, num_layers=1, stages=[])


@pytest.fixture
def coordinator() -> Iterator[tuple[str, list[int]]]:
    """A ROUTER on loopback answering each StatusQuery, first with a stale nonce."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    seen: list[int] = []

    def serve() -> None:
        while not stop.is_set():
            if router.poll(50):
                identity, *frames = router.recv_multipart()
                query = codec.decode(frames)
                assert isinstance(query, wire.StatusQuery)
                seen.append(query.nonce)
                router.send_multipart([identity, *codec.encode(status(query.nonce ^ 1))])
                router.send_multipart([identity, b"\xff", b"not a message"])
                router.send_multipart([identity, *codec.encode(status(query.nonce))])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{port}", seen
    stop.set()
    thread.join()
    router.close(0)
    ctx.term()


def test_round_trips_are_timed_after_one_untimed_exchange(
    coordinator: tuple[str, list[int]],
) -> None:
    address, seen = coordinator
    seconds = round_trip_s(address, TransportSettings.model_validate({}), repeats=3)
    assert seconds > 0
    assert len(seen) == 4 and len(set(seen)) == 4  # 1 + 3 queries, each its own nonce


def test_a_silent_coordinator_is_a_timeout_naming_the_setting() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # accepts, never answers
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(TimeoutError, match="check --coordinator"):
            round_trip_s(
                f"tcp://127.0.0.1:{port}", TransportSettings.model_validate({}), timeout_s=0.2
            )
    finally:
        router.close(0)
        ctx.term()
