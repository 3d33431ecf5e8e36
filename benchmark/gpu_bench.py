"""layerbus against `vllm serve` on one GPU host (or, in --smoke, on this CPU).

For a model folder (by default a config-only Llama-3-8B-shaped folder written by
benchmark/model_shapes.py, served with --load-format dummy), one phase each, in order:
  baseline           greedy texts of single-process vLLM with the stages' settings
                     (benchmark/greedy_baseline.py), 8 prompts, one at a time;
  vllm-default       `vllm serve` with its defaults;
  layerbus-1         layerbus, one stage on cuda:0;
  layerbus-2-shared  layerbus, two stages sharing cuda:0 (--shared-gpu-util each);
  on CUDA also vllm-stage-runner and layerbus-1-uncompiled (benchmark/gpu_systems.py),
  and only when --systems names it layerbus-1-mega-aot (vLLM's mega AOT artifact);
  with --gpus N > 1: layerbus-N-gpus (one stage per GPU, --device cuda:i), vllm-ppN and
                     vllm-tpN (`vllm serve --pipeline-parallel-size/--tensor-parallel-size N`).
Every system is loaded by `vllm bench serve` (random --input-len in / --output-len out) at
each --concurrency; every layerbus system first answers the 8 greedy prompts, compared with
the baseline. Every phase is bounded by --phase-timeout-s; its error is recorded in
summary.json and the next phase still runs. Writes summary.json and summary.md (ratios vs
`vllm serve` defaults) under --output-dir, rewritten after every step, and every log.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

from benchmark import gpu_report
from benchmark.gpu_summary import Deadline, Summary
from benchmark.gpu_systems import (
    BenchEngine,
    LayerbusSystem,
    Platform,
    System,
    start,
    systems_for,
)
from benchmark.load import Load, run_load
from benchmark.processes import child_env
from benchmark.rejoin import measure_rejoin
from benchmark.step_overhead import PhaseProbe

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


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def greedy_texts(
    url: str, name: str, prompts: list[list[int]], max_tokens: int, deadline: Deadline
) -> list[str]:
    """Each prompt (token ids) on its own through the OpenAI completions API, greedy."""
    texts = []
    for ids in prompts:
        body = {"model": name, "prompt": ids, "max_tokens": max_tokens}
        body |= {"temperature": 0, "ignore_eos": True}
        texts.append(_post(url + "/v1/completions", body, deadline.left(120))["choices"][0]["text"])
    return texts


def compare(got: list[str], expected: list[str]) -> tuple[str, list[list[str]]]:
    """'k/n' equal, and the [got, expected] pairs that differ."""
    pairs = list(zip(got, expected, strict=True))
    equal = sum(a == b for a, b in pairs)
    return f"{equal}/{len(pairs)}", [[a, b] for a, b in pairs if a != b]


def gpu_processes() -> list[str]:
    """PIDs of processes holding a GPU now (empty without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return []
    proc = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def wait_gpu_released(timeout: float) -> None:
    """Wait until no process holds GPU memory, so the next system gets all of it."""
    deadline = time.monotonic() + timeout
    while gpu_processes() and time.monotonic() < deadline:
        time.sleep(1)


def device_name(platform: Platform) -> str:
    if platform != "cuda" or not shutil.which("nvidia-smi"):
        return platform.upper()
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    names = [n.strip() for n in proc.stdout.splitlines() if n.strip()]
    return f"{len(names)} × {names[0]}" if names else "CUDA"


def phase_probe(url: str, system: System, summary: Summary) -> PhaseProbe | None:
    """Step phases of a layerbus system's services (none for vLLM; an error is recorded)."""
    if not isinstance(system, LayerbusSystem):
        return None
    try:
        return PhaseProbe(url)
    except Exception:
        summary.error(f"{system.name}-phases", traceback.format_exc())
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--shape", default="llama3-8b", help="benchmark/model_shapes.py shape")
    ap.add_argument("--model", default="", help="a model folder instead of --shape")
    ap.add_argument("--tokenizer-from", type=Path, default=None, help="tokenizer for --shape")
    ap.add_argument("--load-format", default="dummy")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=0, help="requests per load (0: 4 × c, 8-256)")
    ap.add_argument("--warmups", type=int, default=2)
    ap.add_argument("--max-num-seqs", type=int, default=128)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--gpus", type=int, default=1, help="N > 1 adds the one-stage-per-GPU phases")
    ap.add_argument("--shared-gpu-util", type=float, default=0.4, help="per stage, 2 on one GPU")
    ap.add_argument("--baseline-gpu-util", type=float, default=0.4)
    ap.add_argument("--systems", nargs="+", default=None, help="only these phases (names above)")
    ap.add_argument(
        "--reference", default="vllm-default", help="the system ratios are taken against"
    )
    ap.add_argument(
        "--no-rejoin",
        dest="rejoin",
        action="store_false",
        help="skip killing and restarting the last stage after each layerbus system's loads",
    )
    ap.add_argument("--phase-timeout-s", type=float, default=600)
    ap.add_argument("--start-timeout-s", type=float, default=420)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shape, 32 in / 8 out, concurrency 2, 2 requests per load (runs on a CPU)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.shape, args.input_len, args.output_len = "tiny", 32, 8
        args.concurrency, args.prompts, args.warmups, args.greedy_tokens = [2], 2, 0, 8
        args.max_num_seqs, args.max_num_batched_tokens, args.max_model_len = 8, 256, 256
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    from shared.platform_defaults import detect_platform

    platform: Platform = detect_platform()
    model = args.model
    if not model:
        from benchmark.model_shapes import write_shape

        model = str(write_shape(args.shape, out / "model", args.tokenizer_from))
    engine = BenchEngine(
        model=model,
        platform=platform,
        load_format=args.load_format,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    summary = Summary(
        out,
        {
            "platform": platform,
            "device": device_name(platform),
            "model": model,
            "model_name": args.model or args.shape,
            "load_format": args.load_format,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "concurrency": args.concurrency,
            "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "max_model_len": args.max_model_len,
            "greedy_tokens": args.greedy_tokens,
            "gpus": args.gpus,
            "reference": args.reference,
        },
    )
    summary.save()
    from transformers import AutoTokenizer

    from shared.engine_settings import model_num_layers

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [list(tokenizer(p)["input_ids"]) for p in PROMPTS]
    num_layers = model_num_layers(model)
    baseline_file = out / "baseline.json"

    def baseline(deadline: Deadline) -> None:
        cmd = [sys.executable, "-m", "benchmark.greedy_baseline", str(baseline_file)]
        cmd += ["--max-tokens", str(args.greedy_tokens)]
        if platform == "cuda":
            cmd += ["--gpu-memory-utilization", str(args.baseline_gpu_util)]
        with open(out / "baseline.log", "wb") as log:
            subprocess.run(
                cmd,
                input=json.dumps(prompts).encode(),
                env=child_env(engine.layerbus_env()),
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=deadline.left(),
            )

    systems = systems_for(platform, args.gpus, args.shared_gpu_util)
    wanted = set(args.systems or [s.name for s in systems if not s.on_request] + ["baseline"])
    if "baseline" in wanted:
        summary.phase("baseline", args.phase_timeout_s, baseline)
        wait_gpu_released(60)
    loads = [
        Load(
            args.input_len,
            args.output_len,
            c,
            args.prompts or max(8, min(4 * c, 256)),
            warmups=args.warmups,
        )
        for c in args.concurrency
    ]
    for system in systems:
        if system.name not in wanted:
            continue
        summary.data["labels"][system.name] = system.label

        def run_system(deadline: Deadline, system: System = system) -> None:
            began = time.monotonic()
            log_dir = out / "logs" / system.name
            url, children = start(
                engine, system, num_layers, log_dir, deadline.left(args.start_timeout_s)
            )
            try:
                summary.data["ready_s"][system.name] = round(time.monotonic() - began, 1)
                print(f"{system.name} ready in {time.monotonic() - began:.0f} s", flush=True)
                if isinstance(system, LayerbusSystem) and baseline_file.exists():
                    got = greedy_texts(
                        url, engine.served_name, prompts, args.greedy_tokens, deadline
                    )
                    expected = json.loads(baseline_file.read_text())
                    equal, diff = compare(got, expected)
                    summary.data["greedy"][system.name] = equal
                    summary.data["greedy_diff"][system.name] = diff
                    print(f"{system.name} greedy equal {equal}", flush=True)
                    summary.save()
                probe = phase_probe(url, system, summary)
                for load in loads:
                    if deadline.expired():
                        raise TimeoutError(
                            f"{system.name}: phase time used up before c={load.concurrency}"
                        )
                    name = f"{system.name}-c{load.concurrency}"
                    try:
                        before = probe.read() if probe else {}
                        figures = run_load(
                            load,
                            url,
                            engine.served_name,
                            model,
                            out / "raw",
                            name,
                            timeout=deadline.left(),
                        )
                        steps = probe.since(before) if probe else None
                    except Exception:
                        summary.error(name, traceback.format_exc())
                        continue
                    summary.data["loads"].setdefault(system.name, {})[str(load.concurrency)] = (
                        figures
                    )
                    if steps is not None:
                        phased = summary.data.setdefault("phases", {}).setdefault(system.name, {})
                        phased[str(load.concurrency)] = steps
                    print(name, figures, flush=True)
                    summary.save()
                if isinstance(system, LayerbusSystem) and args.rejoin:
                    stage = [n for n in children.procs if n.startswith("stage-")][-1]
                    seconds = measure_rejoin(children, stage, url, engine.served_name, deadline)
                    summary.data["rejoin_s"][system.name] = round(seconds, 1)
                    print(f"{system.name}: {stage} rejoined in {seconds:.0f} s", flush=True)
                    summary.save()
            finally:
                children.stop()
                wait_gpu_released(60)

        summary.phase(system.name, args.phase_timeout_s, run_system)
    print(gpu_report.markdown(summary.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
