"""exit_process: atexit handlers, threads and logs done, the interpreter's teardown skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.prompt_exit import exit_process

CHILD = """
import atexit, logging, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from shared.prompt_exit import exit_process

out = Path(sys.argv[1])

class Finalized:
    def __del__(self):
        out.joinpath("finalized").write_text("yes")

kept = Finalized()  # freed only by the interpreter's teardown
atexit.register(lambda: out.joinpath("atexit").write_text("yes"))
threading.Thread(target=lambda: (time.sleep(0.2), out.joinpath("thread").write_text("yes"))).start()
pool = ThreadPoolExecutor(1)  # an idle worker, stopped by threading's exit hook, not joined forever
pool.submit(lambda: out.joinpath("pool").write_text("yes")).result()
logging.basicConfig(stream=sys.stderr)
logging.getLogger("x").warning("logged")
sys.stdout.write("buffered, no newline")
exit_process(3)
"""


def run_child(code: str, out: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[3]
    return subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=root
    )


def test_exit_runs_atexit_joins_threads_flushes_and_skips_the_teardown(tmp_path: Path) -> None:
    done = run_child(CHILD, tmp_path)
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "atexit").read_text() == "yes"
    assert (tmp_path / "thread").read_text() == "yes"
    assert (tmp_path / "pool").read_text() == "yes"
    assert done.stdout == "buffered, no newline"
    assert "logged" in done.stderr
    assert not (tmp_path / "finalized").exists()


def test_without_it_the_teardown_runs(tmp_path: Path) -> None:
    """The check above can fail: a normal exit does free the module's objects."""
    done = run_child(CHILD.replace("exit_process(3)", "sys.exit(3)"), tmp_path)
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "finalized").read_text() == "yes"


def test_it_is_the_stage_and_coordinator_entry_points_exit() -> None:
    from services.coordinator import server as coordinator
    from services.stage import server as stage

    assert stage.exit_process is exit_process
    assert coordinator.exit_process is exit_process
