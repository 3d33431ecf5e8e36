from pathlib import Path
from typing import Any

import pytest

from benchmark import report
from benchmark.load import METRICS


def _run(
    system: str, c: int, tps: float, delay: float = 0.0, m: int | None = None
) -> dict[str, Any]:
    metrics = dict.fromkeys(METRICS, 1.0)
    metrics.update(output_throughput=tps, median_ttft_ms=tps / 10, median_tpot_ms=tps / 100)
    metrics["failed"] = 0
    return {
        "name": f"{system}-{delay}-{m}-{c}",
        "system": system,
        "delay_ms": delay,
        "micro_batches": m,
        "concurrency": c,
        "num_prompts": 4 * c,
        "metrics": metrics,
    }


SETTINGS = {
    "model": "/m",
    "dtype": "float32",
    "stages": 2,
    "cores": [0, 1],
    "kv_cache_gb": 2.0,
    "max_num_seqs": 128,
    "seed": 0,
    "input_len": 128,
    "output_len": 128,
    "wan_concurrency": 128,
}

RUNS = [
    _run("vllm", 1, 40.0),
    _run("vllm", 128, 500.0),
    _run("layerbus", 1, 36.0),
    _run("layerbus", 128, 600.0),
    _run("layerbus", 128, 300.0, delay=100.0, m=1),
    _run("layerbus", 128, 540.0, delay=100.0),
]


def test_lan_rows_pair_the_systems_with_ratios() -> None:
    rows = report.lan_rows(RUNS)
    assert [r["concurrency"] for r in rows] == [1, 128]
    assert rows[0]["throughput_ratio"] == pytest.approx(0.9)
    assert rows[1]["throughput_ratio"] == pytest.approx(1.2)
    assert rows[1]["tpot_p50_ratio"] == pytest.approx(1.2)


def test_wan_rows_compare_with_vllm_and_with_one_micro_batch() -> None:
    rows = report.wan_rows(RUNS, 128)
    got = [
        (r["run"]["delay_ms"], r["run"]["micro_batches"], r["vs_vllm"], r["vs_m1"]) for r in rows
    ]
    assert got == [
        (0.0, None, pytest.approx(1.2), None),
        (100.0, 1, pytest.approx(0.6), None),
        (100.0, None, pytest.approx(1.08), pytest.approx(1.8)),
    ]


def test_ratio_of_missing_values_is_none() -> None:
    assert report.ratio(None, 1.0) is None
    assert report.ratio(1.0, 0.0) is None


def test_markdown_has_both_tables() -> None:
    text = report.markdown({"settings": SETTINGS, "runs": RUNS})
    assert "| 128 | layerbus | 600.0 |" in text
    assert "| 100 | default | 540.0 |" in text
    assert "1.80" in text
    assert "Failed requests" not in text


def test_markdown_names_failed_requests() -> None:
    runs = [*RUNS[:2], _run("layerbus", 1, 1.0)]
    runs[-1]["metrics"]["failed"] = 3
    assert "Failed requests: layerbus-0.0-None-1: 3" in report.markdown(
        {"settings": SETTINGS, "runs": runs}
    )


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra installs matplotlib")
    path = tmp_path / "bench.png"
    report.plot({"settings": SETTINGS, "runs": RUNS}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_shows_where_the_cores_went() -> None:
    run = _run("layerbus", 128, 600.0)
    run["cpu_window_s"] = 100.0
    run["cpu_s"] = {"coordinator": 30.0, "stage-0-15": 95.0}
    text = report.markdown({"settings": SETTINGS, "runs": [run]})
    assert "| layerbus-0.0-None-128 | 100.0 | 1.25 | coordinator 0.30, stage-0-15 0.95 |" in text


def test_runs_without_cpu_figures_leave_the_cpu_table_out() -> None:
    assert "CPU use" not in report.markdown({"settings": SETTINGS, "runs": RUNS})
