"""Every benchmark script in its smoke mode, so none of them can rot (no timing checks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_hop_latency_smoke(tmp_path: Path) -> None:
    out = tmp_path / "hop.json"
    cmd = [sys.executable, "-m", "benchmark.hop_latency", "--smoke", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = json.loads(out.read_text())
    assert set(summary) >= {"raw_ms", "layerbus_ms", "added_ms", "rows", "bytes_per_hop"}
    assert set(summary["added_ms"]) == {"median", "p99"}
    assert summary["bytes_per_hop"] == 2 * 32 * 576 * 4
    assert b"added per hop" in proc.stdout


def test_delay_proxy_command_forwards_bytes() -> None:
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen()
        port = target.getsockname()[1]
        cmd = [sys.executable, "-m", "benchmark.delay_proxy", "--delay-ms", "5"]
        cmd += ["--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{port}"]
        proxy = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE)
        try:
            assert proxy.stdout is not None
            ready = proxy.stdout.readline().decode()
            assert ready.startswith("delay_proxy ready (5 ms): 127.0.0.1:"), ready
            listen_port = int(ready.split(": ", 1)[1].split(" -> ")[0].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", listen_port)) as client:
                client.sendall(b"ping through the proxy")
                client.shutdown(socket.SHUT_WR)
                conn, _ = target.accept()
                with conn:
                    got = b""
                    while chunk := conn.recv(4096):
                        got += chunk
            assert got == b"ping through the proxy"
        finally:
            proxy.terminate()
            proxy.wait()


@pytest.mark.e2e
def test_serve_bench_smoke(tmp_path: Path) -> None:
    """vllm serve, layerbus and layerbus behind delay proxies, each for a couple of requests."""
    pytest.importorskip("matplotlib", reason="the bench extra installs matplotlib")
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "benchmark.serve_bench", "--smoke", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()[-5000:]
    results = json.loads((out / "bench.json").read_text())
    keys = {(r["system"], r["delay_ms"], r["micro_batches"]) for r in results["runs"]}
    assert keys == {("vllm", 0.0, None), ("layerbus", 0.0, None), ("layerbus", 10.0, None)}
    for run in results["runs"]:
        metrics = run["metrics"]
        assert metrics["completed"] == run["num_prompts"] == 2, run["name"]
        assert metrics["failed"] == 0, run["name"]
        assert metrics["total_output_tokens"] == 2 * results["settings"]["output_len"]
        for key in ("output_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms"):
            assert isinstance(metrics[key], float), (run["name"], key)
    table = (out / "bench.md").read_text()
    assert "| 2 | layerbus |" in table and "| 10 | default |" in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_gpu_bench_smoke(tmp_path: Path) -> None:
    """benchmark/gpu_bench.py on the CPU: tiny dummy-weight shape, every one-device system."""
    out = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "benchmark.gpu_bench", "--smoke", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {}, summary["errors"]
    assert set(summary["loads"]) == {"vllm-default", "layerbus-1", "layerbus-2-shared"}
    for system, loads in summary["loads"].items():
        assert loads["2"]["completed"] == 2 and loads["2"]["failed"] == 0, system
        assert loads["2"]["total_output_tokens"] == 2 * summary["settings"]["output_len"]
    # Random weights, yet the same ones in every process: layerbus equals one vLLM process.
    assert summary["greedy"] == {"layerbus-1": "8/8", "layerbus-2-shared": "8/8"}
    for system in ("layerbus-1", "layerbus-2-shared"):
        assert isinstance(summary["ratios"][system]["2"]["throughput"], float)
    assert "| layerbus, 1 stage | 2 |" in (out / "summary.md").read_text()
    # The step phases of every layerbus service, read from their /metrics around the load.
    for system in ("layerbus-1", "layerbus-2-shared"):
        rows = summary["phases"][system]["2"]
        phases = {(r["who"], r["phase"]) for r in rows if r["count"] > 0}
        assert ("coordinator", "schedule") in phases, rows
        assert any(who.startswith("stage") and p == "forward" for who, p in phases), rows
    # The last stage of each layerbus system was killed and started again, and answered.
    assert set(summary["rejoin_s"]) == {"layerbus-1", "layerbus-2-shared"}
    assert all(seconds > 0 for seconds in summary["rejoin_s"].values())


@pytest.mark.e2e
def test_step_overhead_smoke(tmp_path: Path) -> None:
    """Two stages, a couple of requests: every phase of the token loop is reported."""
    out = tmp_path / "overhead"
    cmd = [sys.executable, "-m", "benchmark.step_overhead", "--smoke", "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()[-5000:]
    results = json.loads((out / "step_overhead.json").read_text())
    seen = {(row["who"].split("-")[0], row["phase"]) for row in results["c2"]["phases"]}
    for phase in ("schedule", "plan", "send", "update", "publish"):
        assert ("coordinator", phase) in seen, phase
    for phase in ("decode", "ring_wait", "forward", "forward_send", "hop"):
        assert ("stage", phase) in seen, phase
    assert "| coordinator | schedule |" in (out / "step_overhead.md").read_text()


def test_placement_bench_smoke(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmark.placement_bench", "--smoke", "--output-dir"]
    proc = subprocess.run([*cmd, str(tmp_path)], cwd=ROOT, env=_env(), capture_output=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()[-3000:]
    report = json.loads((tmp_path / "placement.json").read_text())
    split = report["placed"]["split"]
    assert [a for _, a, _ in split][0] == 0 and split[-1][2] == 30
    assert all(prev[2] == nxt[1] for prev, nxt in zip(split, split[1:], strict=False))
    assert sorted(label for label, _, _ in split) == ["a", "b", "capped"]
    placed, hand = report["runs"]  # one round, the placed stack first
    assert placed["stack"] == "placed" and hand["stack"] == "11:8:11"
    assert hand["split"] == [["b", 0, 11], ["a", 11, 19], ["capped", 19, 30]]
    for run in report["runs"]:
        assert run["output_throughput"] > 0 and run["kv_blocks"] > 0
        assert any(line.startswith("engine ready:") for line in run["coordinator_log"])
        assert run["cpu_s"]["coordinator"] > 0
        assert {p["phase"] for p in run["phases"] if p["who"] == "coordinator"} >= {"schedule"}
    assert report["best_hand_made"] == "11:8:11"
    assert report["placed_vs_best_hand_made"] > 0
