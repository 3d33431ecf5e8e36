"""A stage's rejoin, timed against real child processes (a tiny HTTP server stands in
for the gateway; it answers once the 'stage' child has written its ready file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmark.gpu_summary import Deadline
from benchmark.processes import Children, free_port
from benchmark.rejoin import measure_rejoin

GATEWAY = """
import http.server, json, os, sys
ready = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        ok = os.path.exists(ready)
        body = json.dumps({"choices": [{"text": " Paris"}]} if ok else {"error": "down"})
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# Removes the ready file when it starts ("loading"), writes it after a moment.
STAGE = """
import os, sys, time
ready = sys.argv[1]
if os.path.exists(ready):
    os.remove(ready)
time.sleep(0.5)
open(ready, "w").close()
time.sleep(600)
"""


def test_rejoin_kills_the_stage_starts_it_again_and_times_the_next_answer(
    tmp_path: Path,
) -> None:
    children = Children(tmp_path / "logs")
    ready = str(tmp_path / "ready")
    port = free_port()
    try:
        children.spawn("gateway", [sys.executable, "-c", GATEWAY, str(port), ready], {})
        first = children.spawn("stage-0-2", [sys.executable, "-c", STAGE, ready], {})
        url = f"http://127.0.0.1:{port}"
        seconds = measure_rejoin(children, "stage-0-2", url, "m", Deadline(60))
        assert first.poll() == -9  # killed, as a lost host
        assert seconds >= 0.5  # the restarted 'stage' had to load again
        assert children.procs["stage-0-2-rejoin"].poll() is None
        assert "stage-0-2" not in children.procs
    finally:
        children.stop()


def test_a_stage_that_never_comes_back_is_reported(tmp_path: Path) -> None:
    children = Children(tmp_path / "logs")
    port = free_port()
    try:
        children.spawn("gateway", [sys.executable, "-c", GATEWAY, str(port), "/nonexistent"], {})
        children.spawn("stage-0-2", [sys.executable, "-c", "import time; time.sleep(600)"], {})
        with pytest.raises(TimeoutError, match="stage-0-2 did not rejoin"):
            measure_rejoin(children, "stage-0-2", f"http://127.0.0.1:{port}", "m", Deadline(2))
    finally:
        children.stop()
