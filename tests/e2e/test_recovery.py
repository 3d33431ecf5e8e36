"""Acceptance (issue 7): a pipeline that heals itself while clients keep streaming.

Every service runs as its own process, started separately as on separate hosts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.ops.health_probe import query_status
from tests.e2e import last_use
from tests.e2e.cluster import Cluster
from tests.e2e.recovery_helpers import (
    FAST_HEARTBEATS,
    StreamResult,
    healthy,
    run_streams,
    settled,
    start_stage,
    status,
    wait_for,
)

pytestmark = pytest.mark.e2e

STREAMS = 16
TOKENS = 48


def _cluster(model_path: str, log_dir: Path, **env: str) -> Cluster:
    return Cluster(
        model=model_path,
        layers=[(0, 15), (15, 30)],
        log_dir=log_dir,
        env_extra={**FAST_HEARTBEATS, "LAYERBUS_RECOVERY_TIMEOUT_S": "30", **env},
    )


@pytest.fixture(scope="module")
def healing(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Coordinator, stages 0:15 and 15:30, a gateway, and a standby for 15:30."""
    cluster = _cluster(model_path, tmp_path_factory.mktemp("healing"))
    # Stopped after its last test, so it does not idle beside the stacks of the tests below.
    last_use.STOPS["healing"] = cluster.stop
    try:
        cluster.start()
        start_stage(cluster, 15, 30, "standby-15-30")
        wait_for(lambda: len(status(cluster)["stages"]) == 3, "the standby registers")
        yield cluster
    finally:
        cluster.stop()


def _texts(results: list[StreamResult]) -> list[str]:
    for i, r in enumerate(results):
        assert r.error is None, f"stream {i} failed: {r.error}"
        assert r.finish == "length", f"stream {i} ended with {r.finish!r}"
    return [r.text for r in results]


def _active(cluster: Cluster, start: int) -> dict[str, object]:
    stages = status(cluster)["stages"]
    return next(s for s in stages if s["layer_start"] == start and s["role"] == "active")


@pytest.fixture(scope="module")
def reference(healing: Cluster) -> list[str]:
    """The texts of an uninterrupted run, on the same cluster."""
    wait_for(lambda: healthy(healing), "healthy")
    return _texts(run_streams(healing.url, STREAMS, TOKENS))


def test_kill_active_stage_with_standby(healing: Cluster, reference: list[str]) -> None:
    free = status(healing)["coordinator"]["num_free_blocks"]
    victim = _active(healing, 15)
    recoveries = status(healing)["coordinator"]["recoveries"]

    def kill(_: list[StreamResult]) -> None:
        os.kill(int(str(victim["pid"])), signal.SIGKILL)

    results = run_streams(healing.url, STREAMS, TOKENS, during=kill)
    assert _texts(results) == reference
    st = status(healing)
    assert st["coordinator"]["recoveries"] == recoveries + 1
    assert _active(healing, 15)["name"] != victim["name"]
    wait_for(lambda: settled(healing, free), "KV blocks free and no leftover requests")
    # Bring the killed stage back as a standby for the next scenario.
    start_stage(healing, 15, 30, str(victim["name"]))
    wait_for(
        lambda: any(
            s["name"] == victim["name"] and s["state"] != "dead" for s in status(healing)["stages"]
        ),
        "the killed stage rejoins",
    )


def test_sigstop_active_stage_with_standby(healing: Cluster, reference: list[str]) -> None:
    free = status(healing)["coordinator"]["num_free_blocks"]
    victim = _active(healing, 15)
    pid = int(str(victim["pid"]))

    stopped_at: list[float] = []

    def stop(_: list[StreamResult]) -> None:
        os.kill(pid, signal.SIGSTOP)
        stopped_at.append(time.monotonic())

    try:
        results = run_streams(healing.url, STREAMS, TOKENS, during=stop)
        assert _texts(results) == reference
        assert _active(healing, 15)["name"] != victim["name"]
        # The stage stays stopped for 20 s in all, then wakes up with work of the old chain.
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped_at[0])))
    finally:
        os.kill(pid, signal.SIGCONT)
    # The old stage speaks again: it is a standby, its late results are ignored and it
    # holds no request of the old chain.
    wait_for(
        lambda: any(
            s["name"] == victim["name"] and s["state"] != "dead" and s["role"] == "standby"
            for s in status(healing)["stages"]
        ),
        "the stopped stage is back as a standby",
    )
    wait_for(lambda: settled(healing, free), "KV blocks free and no leftover requests")
    # Serving still gives the reference text after the old stage woke up.
    assert _texts(run_streams(healing.url, STREAMS, TOKENS)) == reference


def test_sigterm_drains_active_stage_to_standby(healing: Cluster, reference: list[str]) -> None:
    victim = _active(healing, 15)
    pid = int(str(victim["pid"]))
    proc = next(p for p in healing.procs.values() if p.pid == pid)

    def term(_: list[StreamResult]) -> None:
        os.kill(pid, signal.SIGTERM)

    results = run_streams(healing.url, STREAMS, TOKENS, during=term)
    assert _texts(results) == reference  # no request failed, nothing changed
    assert proc.wait(timeout=60) == 0  # it left cleanly after handing its work over
    assert _active(healing, 15)["name"] != victim["name"]


def test_kill_first_stage_while_tokens_travel_the_ring(
    healing: Cluster, reference: list[str]
) -> None:
    # The first stage holds plans waiting for tokens the last stage sends it round the
    # ring (services/stage/token_ring.py); killing it loses those plans and the tokens
    # on their way, and the standby takes its place with none of them.
    start_stage(healing, 0, 15, "standby-0-15")
    wait_for(
        lambda: any(
            s["name"] == "standby-0-15" and s["role"] == "standby"
            for s in status(healing)["stages"]
        ),
        "the standby for layers 0:15 registers",
    )
    free = status(healing)["coordinator"]["num_free_blocks"]
    victim = _active(healing, 0)
    recoveries = status(healing)["coordinator"]["recoveries"]

    def kill(_: list[StreamResult]) -> None:
        os.kill(int(str(victim["pid"])), signal.SIGKILL)

    results = run_streams(healing.url, STREAMS, TOKENS, during=kill)
    assert _texts(results) == reference
    assert status(healing)["coordinator"]["recoveries"] == recoveries + 1
    assert _active(healing, 0)["name"] == "standby-0-15"
    wait_for(lambda: settled(healing, free), "KV blocks free and no leftover requests")
    # The new first stage keeps serving the same text once the chain is at rest.
    assert _texts(run_streams(healing.url, STREAMS, TOKENS)) == reference


def test_kill_then_restart_same_stage(model_path: str, tmp_path: Path) -> None:
    # Loading a stage takes 10-30 s on a busy 2-core machine: leave it room.
    cluster = _cluster(model_path, tmp_path, LAYERBUS_RECOVERY_TIMEOUT_S="120")
    try:
        cluster.start()
        reference = _texts(run_streams(cluster.url, STREAMS, TOKENS))
        free = status(cluster)["coordinator"]["num_free_blocks"]
        old_pid = cluster.procs["stage-15-30"].pid

        def kill_and_restart(_: list[StreamResult]) -> None:
            os.kill(old_pid, signal.SIGKILL)
            time.sleep(5)
            start_stage(cluster, 15, 30, "stage-15-30")

        results = run_streams(cluster.url, STREAMS, TOKENS, during=kill_and_restart)
        assert _texts(results) == reference
        assert _active(cluster, 15)["pid"] != old_pid
        wait_for(lambda: settled(cluster, free), "KV blocks free and no leftover requests")
    finally:
        cluster.stop()


def test_no_replacement_fails_clearly_then_recovers(model_path: str, tmp_path: Path) -> None:
    cluster = _cluster(model_path, tmp_path, LAYERBUS_RECOVERY_TIMEOUT_S="8")
    try:
        cluster.start()
        free = status(cluster)["coordinator"]["num_free_blocks"]
        old_pid = cluster.procs["stage-15-30"].pid

        def kill(_: list[StreamResult]) -> None:
            os.kill(old_pid, signal.SIGKILL)

        results = run_streams(cluster.url, 8, TOKENS, during=kill)
        for r in results:
            assert r.error is not None, "every affected request must end with an error"
            assert "LAYERBUS_RECOVERY_TIMEOUT_S" in str(r.error)
        assert not healthy(cluster)
        body = {"model": "SmolLM2-135M-Instruct", "prompt": "Hi", "max_tokens": 4}
        refused = httpx.post(cluster.url + "/v1/completions", json=body, timeout=60)
        assert refused.status_code == 503
        assert "Retry-After" in refused.headers
        # A replacement makes the service whole again.
        start_stage(cluster, 15, 30, "replacement-15-30")
        wait_for(lambda: healthy(cluster), "/health 200 after the replacement joins")
        body["temperature"] = 0
        answer = httpx.post(cluster.url + "/v1/completions", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: settled(cluster, free), "KV blocks free and no leftover requests")
    finally:
        cluster.stop()


def coordinator_ready(cluster: Cluster) -> bool:
    """Asked of the coordinator itself, not through the gateway's cached status."""
    try:
        return query_status(cluster.coordinator, 1).ready
    except TimeoutError:
        return False


def test_coordinator_restart_keeps_stages(model_path: str, tmp_path: Path) -> None:
    # The gateway keeps the old coordinator's status through the restart (as it does
    # for any restart quicker than its default 10 s), so it sends to the new one at once.
    cluster = _cluster(model_path, tmp_path, LAYERBUS_COORDINATOR_TIMEOUT_S="300")
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "Hi", "max_tokens": 4}
    during: list[httpx.Response] = []
    try:
        cluster.start()
        stage_pids = {n: p.pid for n, p in cluster.procs.items() if n.startswith("stage")}

        def restart(_: list[StreamResult]) -> None:
            coordinator = cluster.procs["coordinator"]
            os.killpg(coordinator.pid, signal.SIGTERM)
            coordinator.wait(timeout=30)
            # A request during the outage ends (error or answer), it never hangs.
            url = cluster.url + "/v1/completions"
            sender = threading.Thread(
                target=lambda: during.append(httpx.post(url, json=body, timeout=300))
            )
            sender.start()
            cluster.spawn("coordinator", ["coordinator", "--bind", cluster.coordinator])
            sender.join()

        streams = run_streams(cluster.url, 2, 400, during=restart)
        # The old coordinator acknowledged these; the gateway fails them, and only them.
        for stream in streams:
            assert "the coordinator restarted; retry" in str(stream.error), stream.error
        assert during and during[0].status_code in (200, 503), during[0].text
        # A request sent as soon as the new coordinator is ready is served, although
        # the gateway may not have polled it since (it held the old or a not-ready status).
        wait_for(lambda: coordinator_ready(cluster), "the new coordinator ready", 60)
        body["temperature"] = 0
        answer = httpx.post(cluster.url + "/v1/completions", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        assert healthy(cluster)
        for name, pid in stage_pids.items():
            assert cluster.procs[name].pid == pid and cluster.procs[name].poll() is None
        st = status(cluster)
        assert sorted(s["pid"] for s in st["stages"]) == sorted(stage_pids.values())
    finally:
        cluster.stop()
