import pytest

from benchmark.serve_bench import num_prompts, parse_args


def test_defaults_follow_the_issue() -> None:
    args = parse_args([])
    assert (args.input_len, args.output_len) == (128, 128)
    assert args.concurrency == [1, 16, 32, 64]
    assert args.wan_delays_ms == [0.0, 20.0, 100.0]
    assert args.wan_concurrency == 128
    assert args.wan_micro_batches == [1, None]
    assert args.dtype == "float32"


def test_lists_and_micro_batch_settings_parse() -> None:
    args = parse_args(["--concurrency", "2,4", "--wan-micro-batches", "default,1,4"])
    assert args.concurrency == [2, 4]
    assert args.wan_micro_batches == [None, 1, 4]
    assert parse_args(["--wan-delays-ms", ""]).wan_delays_ms == []


def test_smoke_is_tiny() -> None:
    args = parse_args(["--smoke"])
    assert args.concurrency == [2]
    assert num_prompts(args, 2) == 2
    assert args.output_len <= 16


def test_request_counts_are_bounded() -> None:
    args = parse_args([])
    assert num_prompts(args, 1) == 8
    assert num_prompts(args, 64) == 256
    assert num_prompts(args, 1000) == 512


def test_cores_must_exist() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--cores", "4096"])
