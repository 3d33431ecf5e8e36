"""Acceptance (issue 6): 100 ms between coordinator, stage 0 and stage 1 changes no text."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, free_port
from tests.e2e.recovery_helpers import run_streams, status

pytestmark = pytest.mark.e2e

DELAY_MS = 100
ADVERTISED: list[str] = []  # the proxy addresses the stages advertise


def _wait_for_line(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path.name} never printed {text!r}")


@pytest.fixture(scope="module")
def wan(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three 'hosts' (coordinator, stage 0, stage 1) with 100 ms one-way links between them."""
    cluster = Cluster(model=model_path, layers=[], log_dir=tmp_path_factory.mktemp("wan"))
    cluster.log_dir.mkdir(parents=True, exist_ok=True)
    cluster.coordinator_port = free_port()
    cluster.port = free_port()
    coordinator_proxy = free_port()
    binds = [free_port(), free_port()]
    proxies = [free_port(), free_port()]
    try:
        routes = [(coordinator_proxy, cluster.coordinator_port)] + list(
            zip(proxies, binds, strict=True)
        )
        proxy = [sys.executable, "-m", "benchmark.delay_proxy", "--delay-ms", str(DELAY_MS)]
        for listen, target in routes:
            proxy += ["--listen", f"127.0.0.1:{listen}", "--target", f"127.0.0.1:{target}"]
        log = open(cluster.log_dir / "delay-proxy.log", "wb")  # noqa: SIM115
        cluster.procs["delay-proxy"] = subprocess.Popen(
            proxy, cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_line(cluster.log_dir / "delay-proxy.log", "delay_proxy ready")
        ADVERTISED[:] = [f"tcp://127.0.0.1:{p}" for p in proxies]
        cluster.spawn("coordinator", ["coordinator", "--bind", cluster.coordinator])
        for index, (start, end) in enumerate([(0, 15), (15, 30)]):
            env = dict(cluster.env(), LAYERBUS_STAGE_THREADS="1")
            cluster.spawn(
                f"stage-{start}-{end}",
                [
                    "stage", "--layers", f"{start}:{end}", "--kv-cache-gb", "0.25",
                    "--coordinator", f"tcp://127.0.0.1:{coordinator_proxy}",
                    "--bind", f"tcp://127.0.0.1:{binds[index]}",
                    "--advertise", f"tcp://127.0.0.1:{proxies[index]}",
                ],
                env,
            )
        cluster.spawn(
            "gateway",
            ["gateway", "--port", str(cluster.port), "--coordinator", cluster.coordinator,
             "--model", model_path],
        )
        cluster.wait_healthy(600)
        yield cluster
    finally:
        cluster.stop()


def test_100ms_links_give_the_same_text(wan: Cluster, two_stages: Cluster) -> None:
    reference = run_streams(two_stages.url, 16, 32)
    delayed = run_streams(wan.url, 16, 32)
    for i, (ref, got) in enumerate(zip(reference, delayed, strict=True)):
        assert ref.error is None and got.error is None, (ref.error, got.error)
        assert got.text == ref.text, f"stream {i} differs behind {DELAY_MS} ms links"
    stages = status(wan)["stages"]
    # The activations really went through the delayed links.
    assert [s["address"] for s in stages] == ADVERTISED
    assert all(s["steps"] > 0 for s in stages)
    # Steps spend ~300 ms on the links against a few tens of ms of compute, so the stages
    # idle with every micro-batch in flight: the coordinator raised M above one per stage
    # (services/coordinator/micro_batch_control.py), and the text above stayed the same
    # while requests moved to the new micro-batches.
    coordinator = status(wan)["coordinator"]
    assert 2 < coordinator["micro_batches"] <= coordinator["max_micro_batches"], coordinator
    assert coordinator["round_trip_ms"] > 3 * DELAY_MS, coordinator
    assert "raising micro-batches" in (wan.log_dir / "coordinator.log").read_text()
