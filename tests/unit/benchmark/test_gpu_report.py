"""The GPU benchmark's ratios against `vllm serve` defaults and its Markdown table."""

from __future__ import annotations

from typing import Any

from benchmark.gpu_report import markdown, ratios


def summary() -> dict[str, Any]:
    def load(tput: float, tpot: float) -> dict[str, float]:
        return {"output_throughput": tput, "median_tpot_ms": tpot, "median_ttft_ms": 20.0}

    return {
        "settings": {
            "platform": "cuda",
            "device": "1 × NVIDIA H200",
            "model_name": "llama3-8b",
            "load_format": "dummy",
            "input_len": 512,
            "output_len": 128,
            "max_num_seqs": 128,
            "max_num_batched_tokens": 2048,
            "max_model_len": 2048,
            "greedy_tokens": 32,
        },
        "labels": {"vllm-default": "`vllm serve` defaults", "layerbus-1": "layerbus, 1 stage"},
        "loads": {
            "vllm-default": {"1": load(200.0, 5.0), "32": load(4000.0, 7.0)},
            "layerbus-1": {"1": load(150.0, 6.0)},
        },
        "ready_s": {"vllm-default": 104.2, "layerbus-1": 55.0},
        "rejoin_s": {"layerbus-1": 21.4},
        "greedy": {"layerbus-1": "8/8"},
        "errors": {"layerbus-1-c32": "Traceback ..."},
    }


def test_ratios_are_against_vllm_defaults_at_the_same_concurrency() -> None:
    got = ratios(summary())
    assert set(got) == {"layerbus-1"}
    assert got["layerbus-1"]["1"] == {"throughput": 0.75, "tpot": 1.2}


def test_ratio_is_missing_when_the_reference_is() -> None:
    data = summary()
    del data["loads"]["vllm-default"]["1"]
    assert ratios(data)["layerbus-1"]["1"] == {"throughput": None, "tpot": None}


def test_table_has_a_row_per_load_with_ratios_greedy_and_errors() -> None:
    text = markdown(summary())
    assert "on 1 × NVIDIA H200" in text
    assert "| layerbus, 1 stage | 1 | 150 | 6.00 | 20.0 | 0.75 | 1.20 |" in text
    assert "| `vllm serve` defaults | 32 | 4,000 | 7.00 | 20.0 | – | – |" in text
    assert "layerbus, 1 stage 8/8" in text
    assert "`vllm serve` defaults 104" in text
    assert "started again, s to the next answer: layerbus, 1 stage 21" in text
    assert "Errors (details in summary.json): layerbus-1-c32" in text


def test_another_reference_such_as_vllm_pipeline_parallel() -> None:
    data = summary()
    data["settings"]["reference"] = "layerbus-1"
    data["labels"]["layerbus-1"] = "vLLM PP=2"
    assert ratios(data)["vllm-default"]["1"] == {"throughput": 200 / 150, "tpot": 5 / 6}
    assert "Ratios: against vLLM PP=2" in markdown(data)


def test_step_phases_get_a_table_per_layerbus_system() -> None:
    data = summary()
    data["phases"] = {
        "layerbus-1": {
            "1": [{"who": "coordinator", "phase": "schedule", "count": 10.0, "mean_ms": 0.25}],
            "32": [
                {"who": "coordinator", "phase": "schedule", "count": 9.0, "mean_ms": 0.5},
                {"who": "stage-0-32", "phase": "forward", "count": 9.0, "mean_ms": 7.125},
            ],
        }
    }
    text = markdown(data)
    assert "Step phases of layerbus, 1 stage" in text
    assert "| service | phase | c=1 | c=32 |" in text
    assert "| coordinator | schedule | 0.250 | 0.500 |" in text
    assert "| stage-0-32 | forward | – | 7.125 |" in text
