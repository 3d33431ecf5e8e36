"""Issue 9, acceptance 4: the CPU image builds; the one-host compose stack answers a chat
completion through the gateway; its Prometheus scrapes every service; `down` leaves nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
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


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Project, str, str]]:
    require_docker()
    build_images()
    gateway, prometheus = free_port(), free_port()
    project = Project(
        f"lbtest{os.getpid()}",
        [DEPLOY / "docker-compose.yml"],
        {"LAYERBUS_GATEWAY_PORT": str(gateway), "LAYERBUS_PROMETHEUS_PORT": str(prometheus)},
    )
    try:
        project.up()
        url = f"http://127.0.0.1:{gateway}"
        wait_healthy(url, [project], 900)
        yield project, url, f"http://127.0.0.1:{prometheus}"
    finally:
        project.down()


def scrape_health(prometheus: str) -> dict[str, str]:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
    return {t["labels"]["instance"]: t["health"] for t in targets["activeTargets"]}


def test_chat_completion_through_the_gateway(stack: tuple[Project, str, str]) -> None:
    _, url, _ = stack
    assert "Paris" in ask_paris(url)


def test_prometheus_scrapes_the_gateway(stack: tuple[Project, str, str]) -> None:
    _, _, prometheus = stack
    health = scrape_health(prometheus)
    assert health.get("gateway:8000") == "up", health
    query = "layerbus_gateway_requests_total"
    result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    assert result["data"]["result"], result


def test_prometheus_scrapes_every_service(stack: tuple[Project, str, str]) -> None:
    _, _, prometheus = stack
    wanted = {"gateway:8000", "coordinator:9100", "stage-0:9100", "stage-1:9100"}
    for _ in range(30):  # scrape_interval is 5 s: give every target a few scrapes
        health = scrape_health(prometheus)
        if set(health) == wanted and set(health.values()) == {"up"}:
            break
        time.sleep(2)
    assert set(health) == wanted
    assert set(health.values()) == {"up"}, health


def test_down_leaves_nothing_running(stack: tuple[Project, str, str]) -> None:
    project, url, _ = stack
    project.down()
    assert project.containers() == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=3)
