"""Drive a server with `vllm bench serve` and keep the figures the report needs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.processes import child_env

# Figures copied from vllm bench serve's result file into ours.
METRICS = (
    "completed",
    "failed",
    "duration",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)


@dataclass
class Load:
    """One `vllm bench serve` invocation: random dataset, fixed seed, closed loop."""

    input_len: int
    output_len: int
    concurrency: int
    num_prompts: int
    seed: int = 0
    warmups: int = 2


def bench_command(
    load: Load, url: str, model_name: str, tokenizer: str, result_dir: Path, result_file: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark.vllm_cli",
        "bench",
        "serve",
        "--backend",
        "openai",
        "--base-url",
        url,
        "--endpoint",
        "/v1/completions",
        "--model",
        model_name,
        "--tokenizer",
        tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(load.input_len),
        "--random-output-len",
        str(load.output_len),
        "--random-range-ratio",
        "0",
        "--num-prompts",
        str(load.num_prompts),
        "--max-concurrency",
        str(load.concurrency),
        "--num-warmups",
        str(load.warmups),
        "--seed",
        str(load.seed),
        "--temperature",
        "0",
        "--ignore-eos",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        result_file,
    ]


def run_load(
    load: Load,
    url: str,
    model_name: str,
    tokenizer: str,
    result_dir: Path,
    name: str,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run one load; returns METRICS from vllm bench serve's result (its file stays).

    timeout: seconds before `vllm bench serve` is killed (subprocess.TimeoutExpired).
    """
    result_dir.mkdir(parents=True, exist_ok=True)
    result_file = f"{name}.vllm-bench.json"
    cmd = bench_command(load, url, model_name, tokenizer, result_dir, result_file)
    with open(result_dir / f"{name}.vllm-bench.log", "wb") as log:
        proc = subprocess.run(
            cmd, env=child_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        )
    path = result_dir / result_file
    if proc.returncode != 0 or not path.exists():
        tail = (result_dir / f"{name}.vllm-bench.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"vllm bench serve failed ({proc.returncode}) for {name}:\n{tail}")
    return pick_metrics(json.loads(path.read_text()))


def pick_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the report uses; a missing one is None."""
    return {key: result.get(key) for key in METRICS}
