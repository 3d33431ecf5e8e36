"""Placement against hand-made splits (issue 17): is the coordinator's split as fast?

Starts coordinator, three stages without --layers (two with --memory-gb M, one with
half of it) and a gateway, reads the split placement chose from /status and measures
output throughput with `vllm bench serve`. Then starts the same three stages with
each hand-made split (--layers, the stages in the placed chain's order) and measures
again. Writes placement.json: every split's throughput and placed / best hand-made.

  python -m benchmark.placement_bench --output-dir build/bench [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from benchmark.load import Load, run_load
from benchmark.processes import Children, child_env, free_port

DEFAULT_SPLITS = "11:8:11,11:9:10,10:9:11,10:10:10"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("build/bench"))
    p.add_argument("--model", default="", help="model folder (default: the bundled one)")
    p.add_argument("--memory-gb", type=float, default=0.3, help="cap of two stages")
    p.add_argument("--splits", default=DEFAULT_SPLITS, help="hand-made layer counts, a:b:c,...")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="tiny load, one hand-made split")
    args = p.parse_args(argv)
    if args.smoke:
        args.concurrency, args.num_prompts, args.input_len, args.output_len = 2, 2, 16, 8
        args.splits = args.splits.split(",")[0]
    return args


def start(
    children: Children, model: str, stages: list[tuple[str, list[str]]], timeout: float
) -> str:
    """Coordinator, the stages (label, extra flags) and a gateway; the gateway's URL."""
    env = child_env({"LAYERBUS_MODEL": model, "LAYERBUS_PLACEMENT_SETTLE_S": "2"})
    coordinator = f"tcp://127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "services.ops.cli"]
    children.spawn("coordinator", [*cli, "coordinator", "--bind", coordinator], env)
    for label, flags in stages:
        stage = [*cli, "stage", "--coordinator", coordinator, "--kv-cache-gb", "0.25", *flags]
        children.spawn(label, stage, dict(env, LAYERBUS_STAGE_THREADS="1"))
    port = free_port()
    gateway = [*cli, "gateway", "--port", str(port), "--coordinator", coordinator]
    children.spawn("gateway", [*gateway, "--model", model], env)
    url = f"http://127.0.0.1:{port}"
    children.wait_http(url + "/health", timeout, "coordinator")
    return url


def placed_chain(url: str, pids: dict[str, int]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each active stage in layer order, from /status."""
    by_pid = {pid: label for label, pid in pids.items()}
    stages = httpx.get(url + "/status", timeout=10).json()["stages"]
    active = sorted((s for s in stages if s["role"] == "active"), key=lambda s: s["layer_start"])
    return [(by_pid[s["pid"]], s["layer_start"], s["layer_end"]) for s in active]


def measure(url: str, model: str, args: argparse.Namespace, out: Path, name: str) -> float:
    load = Load(args.input_len, args.output_len, args.concurrency, args.num_prompts)
    metrics = run_load(load, url, Path(model).name, model, out, name)
    return float(metrics["output_throughput"])


def main(argv: list[str] | None = None) -> int:
    from shared.default_model import default_model_path

    args = parse_args(argv)
    model = args.model or str(default_model_path())
    out: Path = args.output_dir
    caps = {"a": args.memory_gb, "b": args.memory_gb, "capped": args.memory_gb / 2}
    report: dict[str, Any] = {"memory_gb": caps, "load": vars(args) | {"output_dir": str(out)}}
    children = Children(out / "placement-placed")
    try:
        stages = [(label, ["--memory-gb", str(gb)]) for label, gb in caps.items()]
        url = start(children, model, stages, 900)
        pids = {label: children.procs[label].pid for label in caps}
        chain = placed_chain(url, pids)
        report["placed"] = {
            "split": [[label, a, b] for label, a, b in chain],
            "output_throughput": measure(url, model, args, out, "placement-placed"),
        }
    finally:
        children.stop()
    order = [label for label, _, _ in chain]
    report["hand_made"] = []
    for split in args.splits.split(","):
        counts = [int(n) for n in split.split(":")]
        bounds, position = [], 0
        for n in counts:
            bounds.append((position, position + n))
            position += n
        children = Children(out / f"placement-{split.replace(':', '-')}")
        try:
            stages = [
                (label, ["--layers", f"{a}:{b}", "--name", label])
                for label, (a, b) in zip(order, bounds, strict=True)
            ]
            url = start(children, model, stages, 900)
            name = f"placement-hand-{split.replace(':', '-')}"
            report["hand_made"].append(
                {
                    "split": split,
                    "order": order,
                    "output_throughput": measure(url, model, args, out, name),
                }
            )
        finally:
            children.stop()
    best = max(h["output_throughput"] for h in report["hand_made"])
    report["placed_vs_best_hand_made"] = report["placed"]["output_throughput"] / best
    out.mkdir(parents=True, exist_ok=True)
    (out / "placement.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
