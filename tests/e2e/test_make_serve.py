"""Acceptance: `make serve` reaches ready, answers, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import ROOT, free_port

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    """All live processes below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_make_serve_answers_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port, coordinator_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "w+b")  # noqa: SIM115 - make owns it
    proc = subprocess.Popen(
        ["make", "serve", f"PORT={port}", f"COORDINATOR_PORT={coordinator_port}"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        env=dict(os.environ, VLLM_LOGGING_LEVEL="WARNING"),
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            seen |= descendants(proc.pid)
            output = (tmp_path / "serve.log").read_text(errors="replace")
            if "layerbus ready: " in output:
                break
            assert proc.poll() is None, f"make serve exited:\n{output[-3000:]}"
            time.sleep(1)
        else:
            pytest.fail("make serve did not become ready")
        seen |= descendants(proc.pid)
        assert len(seen) >= 4  # gateway, coordinator and two stages at least
        body = {
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 16,
        }
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert resp.status_code == 200
        assert "Paris" in resp.json()["choices"][0]["message"]["content"]
        seen |= descendants(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in seen):
        time.sleep(0.5)
    left = [p for p in seen if alive(p)]
    assert left == [], f"processes left behind: {left}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
