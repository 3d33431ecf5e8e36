import os
import subprocess
import sys
import time
from pathlib import Path

from shared.process_age import age_note, process_age_s


def _fake_proc(tmp_path: Path, stat: str, uptime: str) -> Path:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text(stat)
    (tmp_path / "uptime").write_text(uptime)
    return tmp_path


def test_age_of_a_process_with_spaces_in_its_name(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(100 * tick)] + ["0"] * 10
    proc = _fake_proc(tmp_path, "42 (a b) c) " + " ".join(fields), "112.50 400.00\n")
    assert process_age_s(proc) == 12.5
    assert age_note(proc) == " (process up 12.5 s)"


def test_unknown_without_proc(tmp_path: Path) -> None:
    assert process_age_s(tmp_path) is None
    assert age_note(tmp_path) == ""


def test_a_child_started_after_a_pause_is_younger_than_this_process() -> None:
    time.sleep(0.3)
    mine = process_age_s()
    assert mine is not None and mine >= 0.3
    code = "from shared.process_age import process_age_s; print(process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = float(out.stdout)
    assert 0.0 <= child < mine
