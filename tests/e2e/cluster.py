"""Start real layerbus processes (coordinator, stages, gateway) on loopback for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.ops.process_group import stop_processes

ROOT = Path(__file__).resolve().parents[2]


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a child's process group; SIGKILL it if it outlives `timeout`."""
    stop_processes([proc], timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running set of layerbus processes; stop() ends them all."""

    model: str
    layers: list[tuple[int, int]]
    log_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    gateway_args: list[str] = field(default_factory=list)
    coordinator_args: list[str] = field(default_factory=list)
    stage_args: list[list[str]] = field(default_factory=list)  # one list per stage
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator_port: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def coordinator(self) -> str:
        return f"tcp://127.0.0.1:{self.coordinator_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env["LAYERBUS_MODEL"] = self.model
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        env.update(self.env_extra)
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.ops.cli", *args],
            cwd=ROOT,
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 600.0) -> Cluster:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.coordinator_port = free_port()
        self.port = free_port()
        coordinator = ["coordinator", "--bind", self.coordinator, *self.coordinator_args]
        self.spawn("coordinator", coordinator)
        for index, (start, end) in enumerate(self.layers):
            env = dict(self.env(), LAYERBUS_STAGE_THREADS="1")
            args = ["stage", "--layers", f"{start}:{end}", "--coordinator", self.coordinator]
            args += self.stage_args[index] if index < len(self.stage_args) else []
            self.spawn(f"stage-{start}-{end}", args + ["--kv-cache-gb", "0.25"], env)
        gateway = ["gateway", "--port", str(self.port), "--coordinator", self.coordinator]
        self.spawn("gateway", gateway + ["--model", self.model, *self.gateway_args])
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.tail(name)}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("cluster not healthy in time:\n" + self.tail("coordinator"))

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop(self) -> None:
        stop_processes(self.procs.values(), 15)
