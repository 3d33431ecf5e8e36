"""`layerbus serve`: gateway + coordinator + stages as supervised child processes on this host.

Prints progress while the stages load and one line with the URL when ready.
After that, a child that dies is restarted (with backoff; each death and restart
is logged with the old and new pid); the stack stops only on Ctrl-C or SIGTERM,
within 10 s. A child that dies before the stack is ready stops everything: that is
almost always a setting, and restarting it would only repeat the error.
Children also die with this process (PR_SET_PDEATHSIG), so none is left behind.
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
from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.ops.backoff import RestartBackoff
from services.ops.process_group import stop_processes
from services.ops.serve_plan import ChildSpec, ServePlan, plan_children
from services.stage.layers import even_split
from shared.engine_settings import EngineSettings, model_num_layers

STOP_GRACE_S = 7.0  # SIGTERM to SIGKILL: the whole stop stays under 10 s


class ServeSettings(BaseSettings):
    """What `make serve` starts: how many stages, on which ports, and how it supervises."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_SERVE_", extra="ignore")

    stages: int = Field(2, ge=1, description="number of stages to split the layers into")
    standby: bool = Field(False, description="start one extra (standby) stage per layer range")
    host: str = Field("127.0.0.1", description="gateway HTTP address")
    port: int = Field(8000, description="gateway HTTP port")
    coordinator_port: int = Field(5555, description="coordinator ROUTER port")
    metrics_port: int = Field(
        9100,
        ge=0,
        description="first metrics port: coordinator, then each stage, a taken one moving to "
        "the next free (0 = off; "
        "used where the services have --metrics-port)",
    )
    kv_cache_gb: float = Field(0.5, gt=0, description="KV cache per stage, GiB")
    startup_timeout_s: float = Field(900.0, gt=0, description="give up if not ready by then")
    restart_backoff_s: float = Field(
        1.0, gt=0, description="first delay before restarting a dead child (doubles to 30 s)"
    )


def _die_with_parent(cpus: tuple[int, ...]) -> None:
    """Runs in each child before exec: SIGTERM it when the launcher dies; bind its cores."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if cpus:
        os.sched_setaffinity(0, cpus)


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


def _say(line: str) -> None:
    print(f"layerbus: {line}", flush=True)


def describe_exit(code: int) -> str:
    """'exit code 1' or 'signal SIGKILL' for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class Child:
    """One supervised child process and its restart state; owned by the launcher's main thread."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


class Launcher:
    """Starts, watches and restarts the child processes; runs on the main thread."""

    def __init__(self, serve: ServeSettings, engine: EngineSettings) -> None:
        self.serve = serve
        self.engine = engine
        self.children: list[Child] = []
        self.stopping = False
        self.env = dict(os.environ)

    def spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "services.ops.cli", *child.spec.args]
        env = dict(self.env, **child.spec.env)
        cpus = child.spec.cpus
        child.proc = subprocess.Popen(cmd, env=env, preexec_fn=lambda: _die_with_parent(cpus))
        child.started_at = time.monotonic()
        child.restart_at = None
        binding = f", cores {','.join(map(str, cpus))}" if cpus else ""
        _say(f"started {child.spec.name} (pid {child.proc.pid}{binding})")

    def start(
        self,
        model: str,
        forwarded: dict[str, dict[str, str]],
        metrics_capable: set[str],
    ) -> str:
        serve = self.serve
        self.env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.env["LAYERBUS_MODEL"] = model
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, self.env.get("PYTHONPATH")]))
        plan = ServePlan(
            model=model,
            ranges=even_split(model_num_layers(model), serve.stages),
            coordinator_address=f"tcp://127.0.0.1:{serve.coordinator_port}",
            host=serve.host,
            port=serve.port,
            kv_cache_gb=serve.kv_cache_gb,
            standby=serve.standby,
            metrics_port=serve.metrics_port,
            cpus=sorted(os.sched_getaffinity(0)),
        )
        for spec in plan_children(plan, forwarded, metrics_capable):
            backoff = RestartBackoff(initial_s=serve.restart_backoff_s)
            child = Child(spec, backoff=backoff)
            self.children.append(child)
            self.spawn(child)
        return f"http://{serve.host}:{serve.port}"

    def wait_ready(self, url: str) -> bool:
        deadline = time.monotonic() + self.serve.startup_timeout_s
        last = ""
        expected = len(self.children) - 2
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
                line += f" ({len(stages)} of {expected} stages registered)"
            if line != last:
                _say(line)
                last = line
            time.sleep(0.5)
        return False

    def dead_child(self) -> str | None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return f"{child.spec.name} exited with {describe_exit(child.proc.returncode)}"
        return None

    def supervise_once(self, now: float) -> None:
        """Schedule a restart for each child that died; start those whose delay is over."""
        for child in self.children:
            proc = child.proc
            if child.restart_at is None and proc is not None and proc.poll() is not None:
                delay = child.backoff.on_death(now - child.started_at)
                child.restart_at = now + delay
                print(
                    f"layerbus: {child.spec.name} (pid {proc.pid}) died with "
                    f"{describe_exit(proc.returncode)}; restarting in {delay:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            elif child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                self.spawn(child)

    def stop(self) -> None:
        """SIGTERM every child (gateway first), SIGKILL what is left after STOP_GRACE_S."""
        self.stopping = True
        procs = [c.proc for c in reversed(self.children) if c.proc is not None]
        stop_processes(procs, STOP_GRACE_S, group=False)


def serve(
    settings: ServeSettings,
    engine: EngineSettings,
    forwarded: dict[str, dict[str, str]] | None = None,
    metrics_capable: set[str] | None = None,
) -> int:
    """Entry point of `layerbus serve`; returns the exit code."""
    launcher = Launcher(settings, engine)

    def on_signal(signum: int, _frame: object) -> None:
        launcher.stopping = True
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell starting us in the background (`cmd &` without job
    # control) leaves SIGINT ignored, and Ctrl-C / `kill -INT` must still stop everything.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        _say("preparing the model")
        model = engine.resolved_model()
        url = launcher.start(model, forwarded or {}, metrics_capable or set())
        extra = " (and a standby each)" if settings.standby else ""
        _say(f"starting gateway, coordinator and {settings.stages} stages{extra} for {model}")
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
            launcher.supervise_once(time.monotonic())
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        launcher.stop()
