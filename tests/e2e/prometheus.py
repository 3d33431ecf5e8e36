"""A real Prometheus server (Debian's `prometheus`) for tests: our own, on a free loopback port.

Its targets come from a file written by `layerbus prometheus-targets` from the
gateway's /status (file-based discovery), so the test also checks that /status
lists a scrapeable `metrics` URL for every service. It scrapes every second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.cluster import ROOT, free_port, stop_group

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: layerbus
    file_sd_configs:
      - files: ["{targets}"]
"""


def prometheus_binary() -> str | None:
    """Debian's prometheus (`make test` installs it), else any on PATH."""
    if os.access("/usr/bin/prometheus", os.X_OK):
        return "/usr/bin/prometheus"
    return shutil.which("prometheus")


def write_targets(gateway_url: str, path: Path) -> list[dict[str, Any]]:
    """Run `layerbus prometheus-targets GATEWAY PATH`; the file_sd entries it wrote."""
    import json

    subprocess.run(
        [sys.executable, "-m", "services.ops.cli", "prometheus-targets", gateway_url, str(path)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        timeout=60,
    )
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    return entries


@dataclass
class Prometheus:
    """One running Prometheus server and its HTTP API; stop() ends it."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(cls, binary: str, workdir: Path, targets: Path) -> Prometheus:
        config = workdir / "prometheus.yml"
        config.write_text(CONFIG.format(targets=targets))
        url = f"http://127.0.0.1:{free_port()}"
        log = workdir / "prometheus.log"
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(proc, url, log)

    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def poll(self, what: str, attempts: int, check: Any) -> Any:
        """check() until it returns something truthy; at most `attempts` tries, 1 s apart."""
        last: Any = None
        for _ in range(attempts):
            assert self.proc.poll() is None, f"prometheus exited:\n{self.tail()}"
            try:
                last = check()
            except httpx.HTTPError as err:
                last = err
            else:
                if last:
                    return last
            time.sleep(1)
        raise AssertionError(f"{what}: not seen after {attempts} tries; last: {last!r}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_group(self.proc)
