"""`layerbus health`: HTTP and coordinator probes, and the stage verdict."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from services.ops.health_probe import probe, stage_verdict
from shared import codec, wire


def status(*stages: tuple[str, str]) -> wire.Status:
    return wire.Status(
        nonce=1,
        ready=True,
        model="m",
        max_model_len=1,
        num_layers=30,
        stages=[
            wire.StageStatus(
                name=n, address="", layer_start=0, layer_end=1, state=s, last_heartbeat_age_s=0
            )
            for n, s in stages
        ],
    )


def test_stage_verdict() -> None:
    st = status(("stage-0-15", "configured"), ("stage-15-30", "dead"))
    assert stage_verdict(st, "stage-0-15") is None
    assert stage_verdict(st, "stage-15-30") == "stage-15-30 is dead"
    assert "does not list stage-x" in str(stage_verdict(st, "stage-x"))


@pytest.fixture
def fake_coordinator() -> Iterator[str]:
    """A ROUTER on loopback that answers each StatusQuery with a Status of one stage."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if router.poll(50):
                identity, *frames = router.recv_multipart()
                query = codec.decode(frames)
                assert isinstance(query, wire.StatusQuery)
                reply = status(("stage-0-15", "configured"))
                reply.nonce = query.nonce
                router.send_multipart([identity, *codec.encode(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{port}"
    stop.set()
    thread.join()
    router.close(0)
    ctx.term()


def test_coordinator_probe(fake_coordinator: str) -> None:
    assert probe(fake_coordinator) is None
    assert probe(fake_coordinator, "stage-0-15") is None
    assert "does not list stage-15-30" in str(probe(fake_coordinator, "stage-15-30"))


def test_silent_coordinator_is_unhealthy() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # accepts, never answers
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        assert "no status" in str(probe(f"tcp://127.0.0.1:{port}", timeout_s=0.3))
    finally:
        router.close(0)
        ctx.term()


def test_http_probe_refused_port_is_unhealthy() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}/health", timeout_s=1) is not None


def test_unknown_target_names_the_setting() -> None:
    assert "LAYERBUS_HEALTH_TARGET" in str(probe(""))


def test_own_stage_name() -> None:
    from services.ops.health_probe import own_stage_name

    assert own_stage_name({"LAYERBUS_STAGE_NAME": "stage-0"}) == "stage-0"
    assert own_stage_name({"LAYERBUS_STAGE_LAYERS": "15:30"}) == "stage-15-30"


def test_infer_target_from_the_service_command_line() -> None:
    from services.ops.health_probe import infer_target

    assert infer_target(["/opt/venv/bin/layerbus", "gateway", "--port", "9000"], {}) == (
        "http://127.0.0.1:9000/health",
        "",
    )
    assert infer_target(["/opt/venv/bin/layerbus", "gateway"], {"LAYERBUS_PORT": "81"}) == (
        "http://127.0.0.1:81/health",
        "",
    )
    env = {"LAYERBUS_BIND": "tcp://0.0.0.0:5555"}
    assert infer_target(["layerbus", "coordinator"], env) == ("tcp://127.0.0.1:5555", "")
    line = ["python", "-m", "services.ops.cli", "stage", "--layers=0:15", "--coordinator=tcp://c:1"]
    assert infer_target(line, {}) == ("tcp://c:1", "stage-0-15")
    env = {"LAYERBUS_STAGE_COORDINATOR": "tcp://c:2", "LAYERBUS_STAGE_NAME": "s0"}
    assert infer_target(["layerbus", "stage"], env) == ("tcp://c:2", "s0")
    assert infer_target(["python", "-m", "pytest", "stage"], {}) == ("", "")


def test_a_placed_stage_is_named_by_host_and_pid() -> None:
    from services.ops.health_probe import infer_target, own_stage_name

    assert own_stage_name({}, pid=42, hostname="Box.example") == "box-42"
    assert own_stage_name({"LAYERBUS_STAGE_LAYERS": "0:15"}, pid=42) == "stage-0-15"
    assert own_stage_name({"LAYERBUS_STAGE_NAME": "mine"}, pid=42) == "mine"
    line = ["python", "-m", "services.ops.cli", "stage", "--coordinator", "tcp://h:1"]
    target, stage = infer_target(line, {}, pid=7)
    assert target == "tcp://h:1" and stage.endswith("-7")
