"""`layerbus serve`: gateway + coordinator + stages as child processes on this host.

Prints progress while the stages load and one line with the URL when ready.
Ctrl-C (or SIGTERM) stops every child; children also die with this process
(PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.stage.layers import even_split
from shared.engine_settings import EngineSettings, model_num_layers


class ServeSettings(BaseSettings):
    """What `make serve` starts: how many stages and on which ports."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_SERVE_", extra="ignore")

    stages: int = Field(2, ge=1, description="number of stages to split the layers into")
    host: str = Field("127.0.0.1", description="gateway HTTP address")
    port: int = Field(8000, description="gateway HTTP port")
    coordinator_port: int = Field(5555, description="coordinator ROUTER port")
    kv_cache_gb: float = Field(0.5, description="KV cache per stage, GiB")
    startup_timeout_s: float = Field(900.0, description="give up if not ready by then")


def _die_with_parent() -> None:
    """Runs in each child before exec: SIGTERM it when the launcher dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return 0, {}


class Launcher:
    """Owns the child processes; runs on the main thread."""

    def __init__(self, serve: ServeSettings, engine: EngineSettings) -> None:
        self.serve = serve
        self.engine = engine
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "services.cli", *args]
        child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        self.children.append((name, child))

    def start(self, model: str) -> str:
        serve = self.serve
        coordinator = f"tcp://127.0.0.1:{serve.coordinator_port}"
        env = dict(os.environ)
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        env["LAYERBUS_MODEL"] = model
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.spawn("coordinator", ["coordinator", "--bind", coordinator], env)
        ranges = even_split(model_num_layers(model), serve.stages)
        threads = max(1, (os.cpu_count() or 1) // serve.stages)
        for start, end in ranges:
            stage_env = dict(env, LAYERBUS_STAGE_THREADS=str(threads))
            args = ["stage", "--layers", f"{start}:{end}", "--coordinator", coordinator]
            args += ["--kv-cache-gb", str(serve.kv_cache_gb)]
            self.spawn(f"stage {start}:{end}", args, stage_env)
        gateway = ["gateway", "--host", serve.host, "--port", str(serve.port)]
        gateway += ["--coordinator", coordinator, "--model", model]
        self.spawn("gateway", gateway, env)
        return f"http://{serve.host}:{serve.port}"

    def wait_ready(self, url: str) -> bool:
        deadline = time.monotonic() + self.serve.startup_timeout_s
        last = ""
        while time.monotonic() < deadline and not self.stopping:
            if self.dead_child():
                return False
            code, _ = _get_json(url + "/health")
            if code == 200:
                return True
            _, status = _get_json(url + "/status")
            coordinator = status.get("coordinator")
            detail = coordinator.get("detail") if isinstance(coordinator, dict) else None
            line = str(detail or "starting processes")
            stages = status.get("stages") or []
            if isinstance(stages, list) and stages:
                line += f" ({len(stages)} of {self.serve.stages} stages registered)"
            if line != last:
                print(f"layerbus: {line}", flush=True)
                last = line
            time.sleep(0.5)
        return False

    def dead_child(self) -> str | None:
        for name, child in self.children:
            if child.poll() is not None:
                return f"{name} exited with code {child.returncode}"
        return None

    def stop(self) -> None:
        self.stopping = True
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for _, child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def serve(settings: ServeSettings, engine: EngineSettings) -> int:
    """Entry point of `layerbus serve`; returns the exit code."""
    launcher = Launcher(settings, engine)

    def on_signal(signum: int, _frame: object) -> None:
        launcher.stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("layerbus: preparing the model", flush=True)
        model = engine.resolved_model()
        url = launcher.start(model)
        print(
            f"layerbus: starting gateway, coordinator and {settings.stages} stages for {model}",
            flush=True,
        )
        if not launcher.wait_ready(url):
            reason = launcher.dead_child() or "not ready before startup_timeout_s"
            print(f"layerbus: start-up failed: {reason}", file=sys.stderr, flush=True)
            return 1
        print(
            f"layerbus ready: {url}/v1 (model {os.path.basename(model)}, "
            f"{settings.stages} stages; Ctrl-C stops)",
            flush=True,
        )
        while True:
            died = launcher.dead_child()
            if died:
                print(f"layerbus: {died}; stopping", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("layerbus: stopping", flush=True)
        return 0
    finally:
        launcher.stop()
