"""Placement against hand-made splits (issue 17): is the coordinator's split as fast?

Starts coordinator, three stages without --layers (two with --memory-gb M, one with
half of it) and a gateway, reads the split placement chose from /status and measures
output throughput with `vllm bench serve`. Then starts the same three stages with
each hand-made split (--layers, the stages in --hand-order) and measures again.

On a 2-core host one run of a stack is noisy (the coordinator raises the number of
micro-batches from what it measures in 5 s windows, and a run that ends at M = 6
rather than 5 is ~10 % slower), and a stack started first meets a colder host. So
every stack runs --repeats times, in rounds: --order placed-first or hand-first puts
the placed stack first or last in every round, alternate (the default) swaps that
each round. The target compares medians: placed median / best hand-made median
(the best run of each stack is reported too). Each run also records what the
coordinator and stages started with (engine line, KV blocks, micro-batch raises), M
and the step counts at the end, every service's CPU seconds and the step phases
(layerbus_step_phase_seconds) during the load. Writes placement.json.

  python -m benchmark.placement_bench --output-dir build/bench [--splits 12:16:2]
      [--repeats 3] [--order alternate|placed-first|hand-first] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

from benchmark.load import Load, run_load
from benchmark.processes import Children, child_env, free_port

DEFAULT_SPLITS = "11:8:11,11:9:10,10:9:11,10:10:10"
ORDERS = ("alternate", "placed-first", "hand-first")
PLACED = "placed"
LABELS = ("a", "b", "capped")
# Coordinator log lines each run keeps (the chain, what the engine started with, each raise
# of M and a hold for want of CPU).
LOG_LINES = re.compile(
    r"engine ready: .*|raising micro-batches .*|keeping \d+ micro-batches: .*"
    r"|all layers covered: .*"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("build/bench"))
    p.add_argument("--model", default="", help="model folder (default: the bundled one)")
    p.add_argument("--memory-gb", type=float, default=0.3, help="cap of two stages")
    p.add_argument("--splits", default=DEFAULT_SPLITS, help="hand-made layer counts, a:b:c,...")
    p.add_argument(
        "--hand-order",
        default="b,a,capped",
        help="the stages of a hand-made split, first layers first (placement put them in "
        "this order in every run seen so far; pinned stages ignore --memory-gb)",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of every stack")
    p.add_argument("--order", choices=ORDERS, default="alternate", help="see above")
    p.add_argument(
        "--micro-batches",
        type=int,
        default=0,
        help="fix the coordinator's micro-batches in every stack (0: automatic)",
    )
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="tiny load, one hand-made split")
    args = p.parse_args(argv)
    if args.smoke:
        args.concurrency, args.num_prompts, args.input_len, args.output_len = 2, 2, 16, 8
        args.splits = args.splits.split(",")[0]
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if sorted(args.hand_order.split(",")) != sorted(LABELS):
        p.error(f"--hand-order must name each of {', '.join(LABELS)} once")
    return args


def schedule(splits: list[str], repeats: int, order: str) -> list[tuple[int, str]]:
    """(round, stack) of every run in the order they run; a stack is "placed" or a split.

    placed-first / hand-first: the placed stack first / last in every round; alternate:
    first in even rounds, last in odd ones (pure).
    """
    if order not in ORDERS:
        raise ValueError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    runs: list[tuple[int, str]] = []
    for n in range(repeats):
        first = order == "placed-first" or (order == "alternate" and n % 2 == 0)
        stacks = [PLACED, *splits] if first else [*splits, PLACED]
        runs.extend((n, stack) for stack in stacks)
    return runs


def split_bounds(split: str, num_layers: int | None = None) -> list[tuple[int, int]]:
    """A split's ranges, 12:16:2 -> [(0, 12), (12, 28), (28, 30)]; covering num_layers."""
    counts = [int(n) for n in split.split(":")]
    if len(counts) != len(LABELS) or min(counts) < 1:
        raise ValueError(f"a hand-made split is {len(LABELS)} layer counts >= 1, got {split!r}")
    if num_layers is not None and sum(counts) != num_layers:
        raise ValueError(f"split {split} covers {sum(counts)} layers, the model has {num_layers}")
    bounds, position = [], 0
    for n in counts:
        bounds.append((position, position + n))
        position += n
    return bounds


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each stack's throughputs, median and best; placed against the best hand-made (pure).

    placed_vs_best_hand_made: the placed median over the highest hand-made median;
    best_vs_best: the same with each stack's best run.
    """
    per: dict[str, list[float]] = {}
    for run in runs:
        per.setdefault(run["stack"], []).append(run["output_throughput"])
    median = {name: statistics.median(tps) for name, tps in per.items()}
    hands = [name for name in per if name != PLACED]
    if PLACED not in per or not hands:
        raise ValueError("need runs of the placed stack and of at least one hand-made split")
    best_hand = max(hands, key=lambda name: median[name])
    return {
        "stacks": {
            name: {"runs": tps, "median": median[name], "best": max(tps)}
            for name, tps in per.items()
        },
        "best_hand_made": best_hand,
        "placed_vs_best_hand_made": median[PLACED] / median[best_hand],
        "best_vs_best": max(per[PLACED]) / max(max(per[name]) for name in hands),
    }


def log_lines(text: str) -> list[str]:
    """The coordinator log lines a run keeps (engine start, micro-batch raises)."""
    return [m.group(0) for m in LOG_LINES.finditer(text)]


def host_cpu_seconds(stat: str) -> float:
    """CPU seconds every core of the host spent busy (not idle or iowait), from /proc/stat."""
    fields = [int(x) for x in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest and guest_nice (9th, 10th) are already counted in user and nice.
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def read_host_cpu() -> float:
    with open("/proc/stat") as f:
        return host_cpu_seconds(f.read())


def start(
    children: Children,
    model: str,
    stages: list[tuple[str, list[str]]],
    timeout: float,
    micro_batches: int,
) -> str:
    """Coordinator, the stages (label, extra flags) and a gateway; the gateway's URL."""
    env = child_env({"LAYERBUS_MODEL": model, "LAYERBUS_PLACEMENT_SETTLE_S": "2"})
    coordinator = f"tcp://127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "services.ops.cli"]
    coordinator_env = dict(env, LAYERBUS_MICRO_BATCHES=str(micro_batches))
    children.spawn("coordinator", [*cli, "coordinator", "--bind", coordinator], coordinator_env)
    for label, flags in stages:
        stage = [*cli, "stage", "--coordinator", coordinator, "--kv-cache-gb", "0.25", *flags]
        children.spawn(label, stage, dict(env, LAYERBUS_STAGE_THREADS="1"))
    port = free_port()
    gateway = [*cli, "gateway", "--port", str(port), "--coordinator", coordinator]
    children.spawn("gateway", [*gateway, "--model", model], env)
    url = f"http://127.0.0.1:{port}"
    children.wait_http(url + "/health", timeout, "coordinator")
    return url


def placed_chain(status: dict[str, Any], pids: dict[str, int]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each active stage in layer order, from a /status reply."""
    by_pid = {pid: label for label, pid in pids.items()}
    active = [s for s in status["stages"] if s["role"] == "active"]
    active.sort(key=lambda s: s["layer_start"])
    return [(by_pid[s["pid"]], s["layer_start"], s["layer_end"]) for s in active]


def stage_flags(
    stack: str, caps: dict[str, float], hand_order: list[str]
) -> list[tuple[str, list[str]]]:
    """Each stage's label and flags: placed stages offer their memory, hand-made ones pin."""
    if stack == PLACED:
        return [(label, ["--memory-gb", f"{caps[label]:g}"]) for label in LABELS]
    return [
        (label, ["--layers", f"{a}:{b}", "--name", label])
        for label, (a, b) in zip(hand_order, split_bounds(stack), strict=True)
    ]


def run_stack(
    stack: str, n: int, model: str, args: argparse.Namespace, caps: dict[str, float]
) -> dict[str, Any]:
    """Start one stack, measure it once, stop it; what the report keeps of the run."""
    from benchmark.step_overhead import PhaseProbe

    out: Path = args.output_dir
    tag = "placed" if stack == PLACED else "hand-" + stack.replace(":", "-")
    name = f"placement-{tag}-r{n}"
    children = Children(out / name)
    try:
        url = start(
            children,
            model,
            stage_flags(stack, caps, args.hand_order.split(",")),
            900,
            args.micro_batches,
        )
        pids = {label: children.procs[label].pid for label in LABELS}
        status = httpx.get(url + "/status", timeout=30).json()
        probe = PhaseProbe(url)
        phases_before, cpu_before = probe.read(), children.cpu_seconds()
        host_before = read_host_cpu()
        load = Load(args.input_len, args.output_len, args.concurrency, args.num_prompts)
        metrics = run_load(load, url, Path(model).name, model, out, name)
        host_s = read_host_cpu() - host_before
        cpu_after, phases = children.cpu_seconds(), probe.since(phases_before)
        after = httpx.get(url + "/status", timeout=30).json()["coordinator"]
    finally:
        children.stop()
    coordinator_log = (out / name / "coordinator.log").read_text(errors="replace")
    cpu_s = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after}
    return {
        "stack": stack,
        "round": n,
        "name": name,
        "split": [list(c) for c in placed_chain(status, pids)],
        "output_throughput": float(metrics["output_throughput"]),
        "median_tpot_ms": metrics["median_tpot_ms"],
        "duration": metrics["duration"],
        "kv_blocks": after["num_total_blocks"],
        "micro_batches": after["micro_batches"],
        "steps": after["steps"],
        "empty_steps": after["empty_steps"],
        "coordinator_log": log_lines(coordinator_log),
        "cpu_s": cpu_s,
        # CPU seconds the host spent on anything but this stack during the load (other
        # users of the machine, and the load generator): a noisy run shows here.
        "other_cpu_s": round(host_s - sum(cpu_s.values()), 2),
        "phases": phases,
    }


def main(argv: list[str] | None = None) -> int:
    from shared.default_model import default_model_path
    from shared.engine_settings import model_num_layers

    args = parse_args(argv)
    model = args.model or str(default_model_path())
    splits = args.splits.split(",")
    for split in splits:
        split_bounds(split, model_num_layers(model))  # refuse a bad split before starting
    out: Path = args.output_dir
    caps = {"a": args.memory_gb, "b": args.memory_gb, "capped": args.memory_gb / 2}
    report: dict[str, Any] = {"memory_gb": caps, "load": vars(args) | {"output_dir": str(out)}}
    runs: list[dict[str, Any]] = []
    for n, stack in schedule(splits, args.repeats, args.order):
        run = run_stack(stack, n, model, args, caps)
        runs.append(run)
        print(
            f"round {n} {stack}: {run['output_throughput']:.1f} tok/s, M {run['micro_batches']}, "
            f"split {run['split']}, other CPU {run['other_cpu_s']} s",
            flush=True,
        )
    report["runs"] = runs
    report |= summarise(runs)
    # Kept for readers of earlier reports: the placed split of the first placed run.
    report["placed"] = next(
        {"split": r["split"], "output_throughput": r["output_throughput"]}
        for r in runs
        if r["stack"] == PLACED
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "placement.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
