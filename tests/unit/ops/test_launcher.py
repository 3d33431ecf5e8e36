"""`layerbus serve` supervision: dead children are restarted with backoff, stop is bounded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.ops import launcher as launcher_mod
from services.ops.launcher import Child, Launcher, ServeSettings, describe_exit
from services.ops.serve_plan import ChildSpec
from shared.engine_settings import EngineSettings


class FakeProc:
    """Stands in for a Popen: alive until `die` is called."""

    next_pid = 100

    def __init__(self) -> None:
        FakeProc.next_pid += 1
        self.pid = FakeProc.next_pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def die(self, code: int) -> None:
        self.returncode = code


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> Launcher:
    made = Launcher(ServeSettings(), EngineSettings())

    def fake_spawn(child: Child) -> None:
        child.proc = FakeProc()  # type: ignore[assignment]
        child.restart_at = None

    monkeypatch.setattr(made, "spawn", fake_spawn)
    for name in ("coordinator", "stage-0-15", "stage-15-30", "gateway"):
        child = Child(ChildSpec(name, []))
        made.spawn(child)
        made.children.append(child)
    return made


def test_dead_stage_is_restarted_after_its_backoff(
    launcher: Launcher, capsys: pytest.CaptureFixture[str]
) -> None:
    stage = launcher.children[2]
    old = stage.proc
    assert isinstance(old, FakeProc)
    old.die(-9)
    launcher.supervise_once(now=stage.started_at + 5)
    assert stage.proc is old and stage.restart_at is not None
    err = capsys.readouterr().err
    assert f"stage-15-30 (pid {old.pid}) died with signal SIGKILL; restarting in 1 s" in err
    launcher.supervise_once(now=stage.restart_at)
    assert stage.proc is not old and stage.restarts == 1
    assert [c.restarts for c in launcher.children] == [0, 0, 1, 0]


def test_quick_second_death_waits_longer(launcher: Launcher) -> None:
    stage = launcher.children[1]
    delays = []
    for _ in range(3):
        assert isinstance(stage.proc, FakeProc)
        stage.proc.die(1)
        launcher.supervise_once(now=stage.started_at + 1)
        assert stage.restart_at is not None
        delays.append(stage.restart_at - (stage.started_at + 1))
        launcher.supervise_once(now=stage.restart_at)
    assert delays == [1.0, 2.0, 4.0]


def test_no_restart_once_stopping(launcher: Launcher) -> None:
    stage = launcher.children[1]
    assert isinstance(stage.proc, FakeProc)
    stage.proc.die(0)
    launcher.supervise_once(now=0)
    launcher.stopping = True
    launcher.supervise_once(now=10_000)
    assert stage.restarts == 0


def test_stop_kills_a_child_that_ignores_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_mod, "STOP_GRACE_S", 0.5)
    made = Launcher(ServeSettings(), EngineSettings())
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "print('ok', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ok\n"
    made.children.append(Child(ChildSpec("stubborn", []), proc=stubborn))
    made.stop()
    assert stubborn.returncode == -9


def test_describe_exit() -> None:
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(3) == "exit code 3"
