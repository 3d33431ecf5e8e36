"""layerbus on one GPU host against single-process vLLM on the same GPU.

Runs where the wheels of benchmark/gpu_bundle.sh are installed (docs/gpu.md):
1. greedy equality: 8 prompts, single-process vLLM (LLM, one prompt at a time)
   against layerbus (coordinator + 2 stages on the GPU + gateway);
2. `vllm bench serve` at each concurrency against layerbus, then against
   single-process `vllm serve` on one GPU.
Writes summary.json (and every log) under --output-dir; each phase's error is
recorded and the next phase still runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

from benchmark.load import Load, run_load
from benchmark.processes import Children, child_env, free_port

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "List three prime numbers:",
    "def fibonacci(n):",
    "Explain what a GPU is in one sentence.",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "Translate to German: good morning, my friend.",
]
NAME = "smollm2"
BASELINE = """
import json, os, sys
os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"  # the runner layerbus stages use
from vllm import LLM, SamplingParams
from shared.platform_defaults import choose
model, max_tokens, util, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
c = choose("cuda")
llm = LLM(model=model, dtype=c.dtype, gpu_memory_utilization=util, max_model_len=2048,
          enforce_eager=c.enforce_eager, compilation_config=c.compilation, seed=0)
params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
texts = [llm.generate([p], params, use_tqdm=False)[0].outputs[0].text
         for p in json.loads(sys.stdin.read())]
open(out, "w").write(json.dumps(texts))
"""


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def _layerbus(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def start_layerbus(model: str, util: float, log_dir: Path, timeout: float) -> tuple[str, Children]:
    """Coordinator, two stages on cuda:0 (half the layers each) and a gateway."""
    children = Children(log_dir)
    env = child_env(
        {
            "LAYERBUS_MODEL": model,
            "LAYERBUS_MAX_NUM_SEQS": "128",
            "LAYERBUS_MAX_NUM_BATCHED_TOKENS": "2048",
        }
    )
    coordinator = f"tcp://127.0.0.1:{free_port()}"
    children.spawn("coordinator", _layerbus(["coordinator", "--bind", coordinator]), env)
    for layers in ("0:15", "15:30"):
        args = [
            "stage",
            "--layers",
            layers,
            "--coordinator",
            coordinator,
            "--bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--device",
            "cuda:0",
            "--gpu-memory-utilization",
            str(util),
        ]
        children.spawn(f"stage-{layers.replace(':', '-')}", _layerbus(args), env)
    port = free_port()
    children.spawn(
        "gateway",
        _layerbus(
            [
                "gateway",
                "--port",
                str(port),
                "--coordinator",
                coordinator,
                "--model",
                model,
                "--served-model-name",
                NAME,
                "--max-running-requests",
                "512",
            ]
        ),
        env,
    )
    url = f"http://127.0.0.1:{port}"
    children.wait_http(url + "/health", timeout, "coordinator")
    return url, children


def start_vllm(model: str, util: float, log_dir: Path, timeout: float) -> tuple[str, Children]:
    children = Children(log_dir)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmark.vllm_cli",
        "serve",
        model,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--served-model-name",
        NAME,
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "128",
        "--max-num-batched-tokens",
        "2048",
        "--gpu-memory-utilization",
        str(util),
        "--seed",
        "0",
    ]
    children.spawn("vllm-serve", cmd, child_env())
    url = f"http://127.0.0.1:{port}"
    children.wait_http(url + "/v1/models", timeout, "vllm-serve")
    return url, children


def loads(args: argparse.Namespace) -> list[Load]:
    return [
        Load(args.input_len, args.output_len, c, max(8, min(4 * c, 256))) for c in args.concurrency
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--stage-gpu-util", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=240)
    args = ap.parse_args(argv)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"errors": {}}

    def save() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))

    def phase(name: str, fn: Any) -> None:
        started = time.monotonic()
        try:
            fn()
        except Exception:
            summary["errors"][name] = traceback.format_exc()[-3000:]
            print(f"{name} FAILED\n{summary['errors'][name]}", flush=True)
        summary.setdefault("phase_s", {})[name] = round(time.monotonic() - started, 1)
        save()

    from shared.default_model import prepare_default_model

    model = args.model or str(prepare_default_model())
    baseline_file = out / "baseline.json"

    def baseline() -> None:
        with open(out / "baseline.log", "wb") as log:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    BASELINE,
                    model,
                    str(args.max_tokens),
                    str(args.stage_gpu_util * 2),
                    str(baseline_file),
                ],
                input=json.dumps(PROMPTS).encode(),
                env=child_env(),
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    phase("baseline", baseline)

    def layerbus() -> None:
        url, children = start_layerbus(model, args.stage_gpu_util, out, args.timeout)
        try:
            expected = json.loads(baseline_file.read_text())
            got = [
                _post(
                    url + "/v1/completions",
                    {"model": NAME, "prompt": p, "max_tokens": args.max_tokens, "temperature": 0},
                )["choices"][0]["text"]
                for p in PROMPTS
            ]
            equal = sum(a == b for a, b in zip(got, expected, strict=True))
            summary["greedy_equal"] = f"{equal}/{len(PROMPTS)}"
            summary["greedy_diff"] = [[a, b] for a, b in zip(got, expected, strict=True) if a != b]
            print("greedy equal", summary["greedy_equal"], flush=True)
            save()
            for load in loads(args):
                name = f"layerbus-c{load.concurrency}"
                summary[name] = run_load(load, url, NAME, model, out, name)
                print(name, summary[name], flush=True)
                save()
        finally:
            children.stop()

    phase("layerbus", layerbus)

    def vllm() -> None:
        url, children = start_vllm(model, 0.6, out, args.timeout)
        try:
            for load in loads(args):
                name = f"vllm-c{load.concurrency}"
                summary[name] = run_load(load, url, NAME, model, out, name)
                print(name, summary[name], flush=True)
                save()
        finally:
            children.stop()

    phase("vllm", vllm)
    ratios = {}
    for c in args.concurrency:
        lb, vl = summary.get(f"layerbus-c{c}"), summary.get(f"vllm-c{c}")
        if lb and vl:
            ratios[c] = {
                k: round(lb[k] / vl[k], 3)
                for k in ("output_throughput", "median_ttft_ms", "median_tpot_ms")
                if vl[k]
            }
    summary["ratios_layerbus_over_vllm"] = ratios
    save()
    print(json.dumps({k: v for k, v in summary.items() if k != "errors"}, indent=1))
    print("errors:", list(summary["errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
