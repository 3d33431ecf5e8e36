"""The GPU benchmark's phases: bounded in time, errors recorded, the next phase still runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.gpu_bench import Deadline, Summary, compare, parse_args


def test_a_failed_phase_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    summary = Summary(tmp_path, {"platform": "cpu", "model_name": "tiny"})
    ran = []

    def broken(deadline: Deadline) -> None:
        raise RuntimeError("stage exited with 1")

    def fine(deadline: Deadline) -> None:
        ran.append(deadline.left())

    summary.phase("layerbus-1", 60, broken)
    summary.phase("layerbus-2-shared", 60, fine)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert "stage exited with 1" in saved["errors"]["layerbus-1"]
    assert "layerbus-2-shared" not in saved["errors"] and ran
    assert set(saved["phase_s"]) == {"layerbus-1", "layerbus-2-shared"}


def test_deadline_counts_down_and_caps_each_wait() -> None:
    now = [100.0]
    deadline = Deadline(30, clock=lambda: now[0])
    assert deadline.left() == 30 and deadline.left(at_most=10) == 10
    now[0] = 125.0
    assert deadline.left(at_most=10) == 5 and not deadline.expired()
    now[0] = 131.0
    assert deadline.expired() and deadline.left() == 1.0  # still a valid subprocess timeout


def test_compare_counts_equal_texts_and_keeps_the_differences() -> None:
    assert compare(["a", "b", "c"], ["a", "x", "c"]) == ("2/3", [["b", "x"]])
    with pytest.raises(ValueError):
        compare(["a"], ["a", "b"])


def test_defaults_are_the_issue_16_load_and_smoke_shrinks_it(tmp_path: Path) -> None:
    args = parse_args(["--output-dir", str(tmp_path)])
    assert (args.shape, args.load_format, args.input_len, args.output_len) == (
        "llama3-8b",
        "dummy",
        512,
        128,
    )
    assert args.concurrency == [1, 32, 128]
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.max_model_len) == (128, 2048, 2048)
    smoke = parse_args(["--output-dir", str(tmp_path), "--smoke"])
    assert (smoke.shape, smoke.concurrency, smoke.prompts) == ("tiny", [2], 2)
