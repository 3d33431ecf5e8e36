"""Acceptance (issue 7) across a veth link: the wire to a stage's host is cut mid-stream.

The stage for layers 15:30 runs in its own network namespace, as on another
host; a standby for the same layers runs on this host. Cutting the veth link
while 16 greedy streams run must not fail any of them, and when the link
comes back the old stage rejoins as a standby holding nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ROOT, Cluster, free_port
from tests.e2e.netns import VethNamespace, netns_available
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

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]


@pytest.fixture(scope="module")
def split_hosts(
    model_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, VethNamespace]]:
    ns = VethNamespace.create()
    cluster = Cluster(
        model=model_path,
        layers=[],
        log_dir=tmp_path_factory.mktemp("netns"),
        env_extra={**FAST_HEARTBEATS, "LAYERBUS_INSECURE": "1"},
    )
    try:
        cluster.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cluster.coordinator_port = port
        cluster.port = free_port()
        coordinator = f"tcp://{ns.host_addr}:{port}"
        cluster.spawn("coordinator", ["coordinator", "--bind", coordinator])
        stage_env = dict(cluster.env(), LAYERBUS_STAGE_THREADS="1")
        cluster.spawn(
            "stage-0-15",
            # On the host side of the wire, where the other host's last stage reaches it
            # with the sampled tokens (the token ring).
            ["stage", "--layers", "0:15", "--coordinator", coordinator, "--kv-cache-gb", "0.25",
             "--bind", f"tcp://{ns.host_addr}:{free_port()}"],
            stage_env,
        )
        remote = [
            sys.executable, "-m", "services.ops.cli", "stage", "--layers", "15:30",
            "--coordinator", coordinator, "--bind", f"tcp://{ns.ns_addr}:{free_port()}",
            "--kv-cache-gb", "0.25",
        ]
        log = open(cluster.log_dir / "stage-15-30.log", "wb")  # noqa: SIM115
        cluster.procs["stage-15-30"] = subprocess.Popen(
            ns.command(remote), cwd=ROOT, env=stage_env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        cluster.spawn(
            "gateway",
            ["gateway", "--port", str(cluster.port), "--coordinator", coordinator,
             "--model", model_path],
        )
        cluster.wait_healthy(600)
        start_stage(cluster, 15, 30, "standby-15-30", coordinator)
        wait_for(lambda: len(status(cluster)["stages"]) == 3, "the standby registers")
        yield cluster, ns
    finally:
        cluster.stop()
        ns.remove()


def test_cut_link_to_a_stage_host(split_hosts: tuple[Cluster, VethNamespace]) -> None:
    cluster, ns = split_hosts
    wait_for(lambda: healthy(cluster), "healthy")
    reference = run_streams(cluster.url, 16, 48)
    assert all(r.error is None for r in reference)
    remote = next(s for s in status(cluster)["stages"] if s["name"] == "stage-15-30")
    assert remote["role"] == "active" and remote["address"].startswith(f"tcp://{ns.ns_addr}:")
    free = status(cluster)["coordinator"]["num_free_blocks"]

    def cut(_: list[StreamResult]) -> None:
        ns.link(up=False)

    try:
        results = run_streams(cluster.url, 16, 48, during=cut)
    finally:
        ns.link(up=True)
    for i, (ref, got) in enumerate(zip(reference, results, strict=True)):
        assert got.error is None, f"stream {i}: {got.error}"
        assert got.text == ref.text, f"stream {i} differs after the failover"
    stages = {s["name"]: s for s in status(cluster)["stages"]}
    assert stages["standby-15-30"]["role"] == "active"
    wait_for(
        lambda: any(
            s["name"] == "stage-15-30" and s["state"] != "dead" and s["role"] == "standby"
            for s in status(cluster)["stages"]
        ),
        "the cut-off stage is back as a standby once the link returns",
    )
    wait_for(lambda: settled(cluster, free), "KV blocks free and no leftover requests")
