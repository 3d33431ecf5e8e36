"""Child processes of a benchmark: start with logs and pinned cores, wait, stop them all."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.ops.process_group import stop_processes

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the repository importable and vLLM's logs quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.update(extra or {})
    return env


def _pin(cores: set[int] | None) -> Callable[[], None] | None:
    if not cores:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin


def session_cpu_seconds(session: int) -> float:
    """User + system CPU seconds of the live processes in `session` (Linux /proc)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # After "(comm)": state, ppid, pgrp, session, ..., utime (12th), stime (13th).
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == session:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Children:
    """Named child processes, each in its own session with its own log; used by one thread."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # How each child was started, so that it can be started again (respawn).
    commands: dict[str, tuple[list[str], dict[str, str], set[int] | None]] = field(
        default_factory=dict
    )

    def spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        cores: set[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pin(cores),
        )
        log.close()
        self.procs[name] = proc
        self.commands[name] = (cmd, env, cores)
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL child `name` and its process group, as a host failure would, and forget it."""
        proc = self.procs.pop(name)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()

    def respawn(self, name: str, as_name: str) -> subprocess.Popen[bytes]:
        """Start child `name`'s command again, as `as_name` (its own log)."""
        cmd, env, cores = self.commands[name]
        return self.spawn(as_name, cmd, env, cores)

    def check_alive(self) -> None:
        """Raise with the log tail of the first child that has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        """Wait until child `name` has written `text` to its log."""
        deadline = time.monotonic() + timeout
        path = self.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            self.check_alive()
            if path.exists() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not print {text!r} in {timeout:.0f} s:\n{self.tail(name)}")

    def wait_http(self, url: str, timeout: float, blame: str) -> None:
        """Wait until GET url answers 200 while every child is alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{url} not ready in {timeout:.0f} s:\n{self.tail(blame)}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each child with its own children (its session)."""
        return {name: session_cpu_seconds(proc.pid) for name, proc in self.procs.items()}

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after 20 s."""
        stop_processes(self.procs.values(), 20)
        self.procs.clear()

    @contextmanager
    def stopped_on_error(self) -> Iterator[None]:
        """Stop every child when the block raises: a system that fails to start leaves none."""
        try:
            yield
        except BaseException:
            self.stop()
            raise
