"""Single-process `vllm serve` on loopback: the reference the clients tests compare with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.cluster import ROOT, free_port, stop_group


class VllmServer:
    """A `vllm serve` child process (same engine shape as layerbus); stop() ends it."""

    def __init__(self, model: str, log_dir: Path, extra_args: list[str]) -> None:
        self.model = model
        self.log_path = log_dir / "vllm-serve.log"
        self.port = free_port()
        self.args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> VllmServer:
        """Launch the server and wait until it answers."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> VllmServer:
        """Start the child process; wait_ready() waits for it (start other things meanwhile)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_CPU_OMP_THREADS_BIND="nobind")
        env["OMP_NUM_THREADS"] = "1"
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        args = [sys.executable, "-m", "benchmark.vllm_cli", "serve", self.model]
        args += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
        args += ["--max-num-seqs", "64", "--max-num-batched-tokens", "512"]
        args += ["--kv-cache-memory-bytes", str(256 << 20), "--seed", "0"]
        args += ["--host", "127.0.0.1", "--port", str(self.port), *self.args]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, timeout: float = 600.0) -> VllmServer:
        """Wait until a launched server answers /health."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("vllm serve exited early:\n" + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError("vllm serve not healthy in time")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
