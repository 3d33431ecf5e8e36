"""`layerbus probe`: this CPU's capacity as JSON that `layerbus plan --stages` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ops import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_probes_feed_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for name, memory in (("big", "1.0"), ("small", "0.25")):
        code, out, err = run(
            [
                "probe",
                "--name",
                name,
                "--memory-gb",
                memory,
                "--dtype",
                "float32",
                "--threads",
                "1",
            ],
            capsys,
        )
        assert code == 0
        offer = json.loads(out)
        assert offer["name"] == name and offer["memory_gb"] == float(memory)
        assert offer["device"].startswith("cpu")
        assert 0 < offer["decode_ms"] < offer["prefill_ms"]
        assert f"--memory-gb {memory.rstrip('0').rstrip('.')}" in err
        path = tmp_path / f"{name}.json"
        path.write_text(out)
        files += ["--stages", str(path)]
    code, out, _ = run(["plan", "--dtype", "float32", "--json", *files], capsys)
    assert code == 0
    plan = json.loads(out)
    # 0.25 GiB holds at most 15 of the bundled model's 16.5 MiB layers (KV for 2048 tokens).
    spans = {c["name"]: c["layers"] for c in plan["chain"]}
    assert set(spans) <= {"big", "small"} and "big" in spans
    assert all(c["memory_gb"] <= c["memory_cap_gb"] for c in plan["chain"])


def test_threads_are_set_as_a_stage_sets_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    code, out, _ = run(["probe", "--memory-gb", "1", "--threads", "1"], capsys)
    assert code == 0 and threads == [1]
    assert json.loads(out)["decode_ms"] > 0


def test_unknown_settings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["probe", "--layers", "0:3"], capsys)
    assert code == 2
    assert "unknown setting(s) ['layers']" in err


def test_with_a_coordinator_the_probe_times_the_link(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    import zmq

    from shared import codec, wire

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
                reply = wire.Status(
                    nonce=query.nonce,
                    ready=True,
                    model="m",
                    max_model_len=1,
                    num_layers=1,
                    stages=[],
                )
                router.send_multipart([identity, *codec.encode(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        argv = ["probe", "--memory-gb", "1", "--coordinator", f"tcp://127.0.0.1:{port}"]
        code, out, _ = run(argv, capsys)
    finally:
        stop.set()
        thread.join()
        router.close(0)
        ctx.term()
    assert code == 0
    assert json.loads(out)["link_ms"] > 0
