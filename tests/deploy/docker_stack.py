"""Build the layerbus images and drive docker-compose projects for the deploy tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE_IMAGE = "layerbus-base:bookworm"
IMAGE = "layerbus:test"
PROMETHEUS_IMAGE = "layerbus-prometheus:test"


def require_docker() -> None:
    """Skip (with the reason) unless `make test-deploy` asked for these tests and Docker runs."""
    if os.environ.get("LAYERBUS_TEST_DEPLOY") != "1":
        pytest.skip("Docker stack tests run with `make test-deploy` (LAYERBUS_TEST_DEPLOY=1)")
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (deploy/scripts/docker-host.sh installs it)")
    info = subprocess.run(["docker", "info"], capture_output=True)
    if info.returncode != 0:
        pytest.skip(f"no Docker engine answers: {info.stderr.decode()[-300:]}")


def build_images() -> None:
    """The base image (debootstrap), the layerbus image and the Debian-built Prometheus."""
    env = dict(os.environ, LAYERBUS_BASE_IMAGE=BASE_IMAGE)
    subprocess.run(
        [str(DEPLOY / "scripts" / "build-image.sh"), IMAGE], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "-t",
            PROMETHEUS_IMAGE,
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            str(DEPLOY / "prometheus"),
        ],
        check=True,
    )


@dataclass
class Project:
    """One docker-compose project (`-p name`) over some compose files."""

    name: str
    files: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = ["docker-compose", "-p", self.name]
        for f in self.files:
            cmd += ["-f", str(f)]
        env = dict(os.environ, LAYERBUS_IMAGE=IMAGE, LAYERBUS_PROMETHEUS_IMAGE=PROMETHEUS_IMAGE)
        env.update(self.env)
        return subprocess.run([*cmd, *args], env=env, check=check, capture_output=True)

    def up(self) -> None:
        self.compose("up", "-d", "--no-build")

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail=40", check=False).stdout.decode()

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)

    def containers(self) -> list[str]:
        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"],
            capture_output=True,
            check=True,
        )
        return out.stdout.decode().split()


def wait_healthy(url: str, projects: list[Project], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail("stack not healthy:\n" + "\n".join(p.logs() for p in projects))


def ask_paris(url: str) -> str:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 12,
    }
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])
