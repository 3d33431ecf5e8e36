"""The stage's offer loop against a coordinator ROUTER on loopback (no vLLM)."""

from __future__ import annotations

import threading

import pytest
import zmq

from services.stage import offer as offer_module
from services.stage.offer import Offering, OfferRefused, stage_name
from services.stage.settings import StageSettings
from shared import codec, wire
from shared.settings import TransportSettings


def an_offer() -> wire.Offer:
    return wire.Offer(
        name="host-1",
        pid=1,
        num_layers=30,
        engine_fingerprint="fp",
        device="cpu",
        memory_bytes=1 << 30,
        decode_s=1e-3,
        prefill_s=2e-3,
    )


@pytest.fixture
def router() -> tuple[zmq.Socket, str]:  # type: ignore[type-arg]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(0)


def receive(sock: zmq.Socket) -> tuple[bytes, object]:  # type: ignore[type-arg]
    assert sock.poll(5000), "no offer arrived"
    identity, *frames = sock.recv_multipart()
    return identity, codec.decode(frames)


def test_offers_until_assigned_and_carries_the_round_trip(
    router: tuple[zmq.Socket, str],  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(offer_module, "OFFER_INTERVAL_S", 0.05)
    sock, address = router
    offering = Offering(
        "host-1", an_offer(), StageSettings(coordinator=address), TransportSettings()
    )
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(offering.wait(threading.Event())))
    waiter.start()
    identity, first = receive(sock)
    assert identity == b"host-1#offer" and isinstance(first, wire.Offer)
    assert first.link_s is None
    sock.send_multipart([identity, *codec.encode(wire.OfferSeen(echo=first.sent_at, why="x"))])
    while True:  # the next offers carry the measured round trip
        _, later = receive(sock)
        assert isinstance(later, wire.Offer)
        if later.link_s is not None:
            break
    assert 0 <= later.link_s < 5
    sock.send_multipart([identity, *codec.encode(wire.Assign(layer_start=3, layer_end=9))])
    waiter.join(5)
    [assignment] = got
    assert assignment is not None and assignment.layers == "3:9" and not assignment.standby
    # While the stage loads, the beacon repeats the offer.
    offering.beacon()
    _, beat = receive(sock)
    assert isinstance(beat, wire.Offer) and beat.name == "host-1"
    offering.close()


def test_a_refused_offer_raises_with_the_coordinators_reason(
    router: tuple[zmq.Socket, str],  # type: ignore[type-arg]
) -> None:
    sock, address = router
    offering = Offering(
        "host-1", an_offer(), StageSettings(coordinator=address), TransportSettings()
    )
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            offering.wait(threading.Event())
        except OfferRefused as err:
            errors.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    identity, _ = receive(sock)
    sock.send_multipart([identity, *codec.encode(wire.Shutdown(reason="use the same --model"))])
    waiter.join(5)
    offering.close()
    assert [str(e) for e in errors] == ["use the same --model"]


def test_a_stop_ends_the_wait_without_a_range() -> None:
    offering = Offering(
        "host-1", an_offer(), StageSettings(coordinator="tcp://127.0.0.1:9"), TransportSettings()
    )
    stopping = threading.Event()
    threading.Timer(0.2, stopping.set).start()
    assert offering.wait(stopping) is None
    offering.close()


def test_names_without_name_are_host_and_pid() -> None:
    import os

    assert stage_name(StageSettings(name="mine"), TransportSettings()) == "mine"
    assert stage_name(StageSettings(), TransportSettings()).endswith(f"-{os.getpid()}")
