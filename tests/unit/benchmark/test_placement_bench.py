"""The placement benchmark's pure parts: run order, splits, the summary, kept log lines."""

from __future__ import annotations

import pytest

from benchmark.placement_bench import (
    PLACED,
    host_cpu_seconds,
    log_lines,
    parse_args,
    placed_chain,
    schedule,
    split_bounds,
    stage_flags,
    summarise,
)


def test_alternate_order_swaps_the_placed_stack_each_round() -> None:
    runs = schedule(["12:16:2", "10:9:11"], 3, "alternate")
    assert runs == [
        (0, PLACED), (0, "12:16:2"), (0, "10:9:11"),
        (1, "12:16:2"), (1, "10:9:11"), (1, PLACED),
        (2, PLACED), (2, "12:16:2"), (2, "10:9:11"),
    ]  # fmt: skip


def test_fixed_orders_put_the_placed_stack_first_or_last_in_every_round() -> None:
    assert schedule(["12:16:2"], 2, "placed-first") == [
        (0, PLACED), (0, "12:16:2"), (1, PLACED), (1, "12:16:2"),
    ]  # fmt: skip
    assert schedule(["12:16:2"], 2, "hand-first") == [
        (0, "12:16:2"), (0, PLACED), (1, "12:16:2"), (1, PLACED),
    ]  # fmt: skip


def test_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="--order"):
        schedule(["12:16:2"], 1, "random")


def test_split_bounds_are_contiguous_and_must_cover_the_model() -> None:
    assert split_bounds("12:16:2", 30) == [(0, 12), (12, 28), (28, 30)]
    with pytest.raises(ValueError, match="covers 29 layers, the model has 30"):
        split_bounds("12:15:2", 30)
    with pytest.raises(ValueError, match="3 layer counts"):
        split_bounds("15:15", 30)


def test_hand_made_stages_pin_their_ranges_in_the_given_order() -> None:
    caps = {"a": 0.3, "b": 0.3, "capped": 0.15}
    flags = stage_flags("12:16:2", caps, ["b", "a", "capped"])
    assert flags == [
        ("b", ["--layers", "0:12", "--name", "b"]),
        ("a", ["--layers", "12:28", "--name", "a"]),
        ("capped", ["--layers", "28:30", "--name", "capped"]),
    ]
    assert dict(stage_flags(PLACED, caps, ["b", "a", "capped"]))["capped"] == [
        "--memory-gb",
        "0.15",
    ]


def test_summary_compares_medians_and_best_runs() -> None:
    runs = [
        {"stack": PLACED, "output_throughput": 70.0},
        {"stack": PLACED, "output_throughput": 80.0},
        {"stack": PLACED, "output_throughput": 90.0},
        {"stack": "12:16:2", "output_throughput": 100.0},
        {"stack": "12:16:2", "output_throughput": 60.0},
        {"stack": "12:16:2", "output_throughput": 85.0},
        {"stack": "10:9:11", "output_throughput": 50.0},
    ]
    summary = summarise(runs)
    assert summary["stacks"][PLACED] == {"runs": [70.0, 80.0, 90.0], "median": 80.0, "best": 90.0}
    assert summary["best_hand_made"] == "12:16:2"
    assert summary["placed_vs_best_hand_made"] == pytest.approx(80.0 / 85.0)
    assert summary["best_vs_best"] == pytest.approx(90.0 / 100.0)


def test_summary_needs_both_kinds_of_stack() -> None:
    with pytest.raises(ValueError, match="placed stack"):
        summarise([{"stack": "12:16:2", "output_throughput": 1.0}])


def test_placed_chain_names_stages_by_label_in_layer_order() -> None:
    status = {
        "stages": [
            {"pid": 11, "role": "active", "layer_start": 12, "layer_end": 28},
            {"pid": 12, "role": "active", "layer_start": 0, "layer_end": 12},
            {"pid": 13, "role": "standby", "layer_start": 0, "layer_end": 12},
            {"pid": 14, "role": "active", "layer_start": 28, "layer_end": 30},
        ]
    }
    pids = {"a": 11, "b": 12, "x": 13, "capped": 14}
    assert placed_chain(status, pids) == [("b", 0, 12), ("a", 12, 28), ("capped", 28, 30)]


def test_log_lines_keep_the_engine_start_each_raise_and_a_hold() -> None:
    text = (
        "09:32:10 coordinator INFO waiting for stages\n"
        "09:32:16 coordinator INFO engine ready: 3 stages, 113 KV blocks, 3 micro-batches\n"
        "09:32:45 coordinator INFO raising micro-batches 3 -> 4: 4.5 in flight\n"
        "09:32:50 coordinator INFO keeping 4 micro-batches: a chain stage waited\n"
    )
    assert log_lines(text) == [
        "engine ready: 3 stages, 113 KV blocks, 3 micro-batches",
        "raising micro-batches 3 -> 4: 4.5 in flight",
        "keeping 4 micro-batches: a chain stage waited",
    ]


def test_arguments_check_repeats_and_hand_order() -> None:
    assert parse_args(["--repeats", "3"]).order == "alternate"
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--hand-order", "a,b,b"])


def test_host_cpu_counts_busy_time_without_idle_and_iowait() -> None:
    import os

    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = f"cpu  {tick} 0 {tick} {50 * tick} {tick} 0 {tick} 0 {tick} 0\ncpu0 1 2 3 4\n"
    assert host_cpu_seconds(stat) == pytest.approx(3.0)
