"""How long the stage's main thread waited for a CPU (services/stage/cpu_wait.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from services.stage.cpu_wait import CpuWait, run_queue_wait_s


def test_the_second_schedstat_field_is_the_run_queue_wait_in_ns() -> None:
    assert run_queue_wait_s("9244782902 2500000000 2536\n") == pytest.approx(2.5)
    with pytest.raises(ValueError, match="schedstat"):
        run_queue_wait_s("")


def test_it_reads_the_creating_threads_schedstat(tmp_path: Path) -> None:
    task = tmp_path / str(os.getpid()) / "task" / str(threading.get_native_id())
    task.mkdir(parents=True)
    (task / "schedstat").write_text("100 1500000000 7\n")
    wait = CpuWait(proc=str(tmp_path))
    assert wait.seconds() == pytest.approx(1.5)
    (task / "schedstat").write_text("200 2250000000 9\n")
    assert wait.seconds() == pytest.approx(2.25)  # cumulative, read again each time


def test_without_the_file_the_wait_reads_zero(tmp_path: Path) -> None:
    assert CpuWait(proc=str(tmp_path)).seconds() == 0.0
    task = tmp_path / str(os.getpid()) / "task" / str(threading.get_native_id())
    task.mkdir(parents=True)
    (task / "schedstat").write_text("garbage\n")
    assert CpuWait(proc=str(tmp_path)).seconds() == 0.0


def test_another_thread_reads_the_main_threads_wait(tmp_path: Path) -> None:
    main = tmp_path / str(os.getpid()) / "task" / str(threading.get_native_id())
    main.mkdir(parents=True)
    (main / "schedstat").write_text("1 3000000000 1\n")
    wait = CpuWait(proc=str(tmp_path))
    seen: list[float] = []
    reader = threading.Thread(target=lambda: seen.append(wait.seconds()))
    reader.start()
    reader.join()
    assert seen == [pytest.approx(3.0)]
