"""shared/dropped.py: dropped-message counters exist at 0 for every reason the code drops for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from shared.dropped import REASONS, count, drop, export_zeros

ROOT = Path(__file__).resolve().parents[3]
DROP_CALL = re.compile(r'\bdrop\(\s*"([^"]+)",\s*"([^"]+)"')
UNAUTHORIZED = re.compile(r'\bUnauthorized\(\s*"([^"]+)"')


def test_every_reason_the_code_drops_for_is_known() -> None:
    used: set[tuple[str, str]] = set()
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        used |= set(DROP_CALL.findall(text))
        if path.name == "authorization.py":
            used |= {("coordinator", reason) for reason in UNAUTHORIZED.findall(text)}
    assert used, "no drop() call found: the pattern is stale"
    known = {(socket, reason) for socket, reasons in REASONS.items() for reason in reasons}
    assert used - known == set()


def test_export_zeros_creates_every_series_and_keeps_counted_drops() -> None:
    # The counter is process-wide: other tests may have dropped on stage-data already.
    export_zeros("stage-data")
    text = generate_latest().decode()
    for reason in REASONS["stage-data"]:
        line = f'layerbus_dropped_messages_total{{reason="{reason}",socket="stage-data"}}'
        assert line in text
    before = count("stage-data", "stale")
    drop("stage-data", "stale", "test")
    export_zeros("stage-data")
    assert count("stage-data", "stale") == before + 1


def test_drop_counts() -> None:
    before = count("stage-control", "malformed")
    drop("stage-control", "malformed", "test")
    assert count("stage-control", "malformed") == before + 1


def test_a_fresh_process_exports_every_series_at_zero() -> None:
    code = (
        "from prometheus_client import generate_latest\n"
        "from shared.dropped import export_zeros\n"
        "export_zeros('stage-data')\n"
        "print(generate_latest().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    for reason in REASONS["stage-data"]:
        line = f'layerbus_dropped_messages_total{{reason="{reason}",socket="stage-data"}} 0.0'
        assert line in out
