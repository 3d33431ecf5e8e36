"""The GPU benchmark's phases: bounded in time, errors recorded, the next phase still runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.gpu_bench import compare, parse_args


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
