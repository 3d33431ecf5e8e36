"""Issue 9, acceptance 5: the per-host compose files, started as separate projects on
separate Docker networks joined only through published ports, serve a completion."""

from __future__ import annotations

import os

import pytest

from tests.deploy.docker_stack import (
    DEPLOY,
    Project,
    ask_paris,
    build_images,
    require_docker,
    wait_healthy,
)
from tests.e2e.cluster import free_port

pytestmark = pytest.mark.deploy


def test_head_and_two_stage_hosts_serve_a_completion() -> None:
    require_docker()
    build_images()
    coordinator, gateway = free_port(), free_port()
    head = Project(
        f"lbhead{os.getpid()}",
        [DEPLOY / "compose" / "head.yml"],
        {
            "LAYERBUS_COORDINATOR_PORT": str(coordinator),
            "LAYERBUS_COORDINATOR_METRICS_PORT": str(free_port()),
            "LAYERBUS_GATEWAY_PORT": str(gateway),
            # One test machine, no keys: plaintext on the published ports, on purpose.
            "LAYERBUS_INSECURE": "true",
        },
    )
    stages = [
        Project(
            f"lbstage{i}x{os.getpid()}",
            [DEPLOY / "compose" / "stage.yml"],
            {
                # Each project has its own network: peers meet only at published ports.
                "LAYERBUS_STAGE_HOST": "host.docker.internal",
                "LAYERBUS_INSECURE": "true",
                "LAYERBUS_STAGE_PORT": str(free_port()),
                "LAYERBUS_STAGE_METRICS_PORT": str(free_port()),
                "LAYERBUS_STAGE_COORDINATOR": f"tcp://host.docker.internal:{coordinator}",
                "LAYERBUS_STAGE_THREADS": "1",
                "LAYERBUS_STAGE_KV_CACHE_GB": "0.25",
            },
        )
        # No layer range: the coordinator places both stages.
        for i in range(2)
    ]
    projects = [head, *stages]
    try:
        for project in projects:
            project.up()
        url = f"http://127.0.0.1:{gateway}"
        wait_healthy(url, projects, 900)
        assert "Paris" in ask_paris(url)
    finally:
        for project in reversed(projects):
            project.down()
    assert [c for p in projects for c in p.containers()] == []
