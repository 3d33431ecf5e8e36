"""A reloaded stage runs the same command with its new range and the placed flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.stage.reload import reload_command


def test_the_new_range_and_the_placed_flag_travel_in_the_environment() -> None:
    argv, env = reload_command("3:9", ["python", "-m", "services.ops.cli", "stage"], {"A": "1"})
    assert argv == ["python", "-m", "services.ops.cli", "stage"]
    assert env == {"A": "1", "LAYERBUS_STAGE_LAYERS": "3:9", "LAYERBUS_STAGE_PLACED": "1"}
    with pytest.raises(RuntimeError, match="command line"):
        reload_command("3:9", [], {})


def test_exec_keeps_the_process_id_the_default_name_holds() -> None:
    # A child that reloads itself once: the second run prints its pid and the range.
    code = (
        "import os, sys\n"
        "if 'LAYERBUS_STAGE_LAYERS' in os.environ:\n"
        "    env = os.environ\n"
        "    print(os.getpid(), env['LAYERBUS_STAGE_LAYERS'], env['LAYERBUS_STAGE_PLACED'])\n"
        "else:\n"
        "    print(os.getpid(), flush=True)\n"
        "    from services.stage.reload import reload_process\n"
        "    reload_process('0:5')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
    )
    first, second = done.stdout.split("\n")[:2]
    assert second.split() == [first, "0:5", "1"]
