"""layerbus against single-process `vllm serve`, both driven by `vllm bench serve`.

One invocation: `vllm serve` and a layerbus pipeline on the same model folder,
dtype, KV budget and cores (benchmark/systems.py), each loaded at every
--concurrency; then layerbus behind delay proxies at every --wan-delays-ms,
once per --wan-micro-batches setting, at --wan-concurrency. Writes to
--output-dir: bench.json (settings and every run's figures, rewritten after
each run), bench.md (tables with ratios), bench.png (throughput plot), the raw
`vllm bench serve` results and every process's log.

    python -m benchmark.serve_bench             # the full run (tens of minutes)
    python -m benchmark.serve_bench --smoke     # tiny sizes, for tests
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmark import report
from benchmark.load import Load, run_load
from benchmark.processes import ROOT
from benchmark.systems import Engine, Started, start_layerbus, start_vllm


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _micro_batches(text: str) -> list[int | None]:
    """'1,default' -> [1, None]; None leaves the coordinator's own default."""
    out: list[int | None] = []
    for item in (x.strip() for x in text.split(",")):
        if item == "default":
            out.append(None)
        elif item:
            out.append(int(item))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.serve_bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="", help="HF model folder (default: the bundled one)")
    p.add_argument("--served-model-name", default="", help="default: the folder name")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--stages", type=int, default=2, help="layerbus stages")
    p.add_argument(
        "--split",
        choices=["balanced", "even"],
        default="balanced",
        help="layer ranges: even compute (LM head counted) or even layer counts",
    )
    p.add_argument("--cores", type=_ints, default=[0, 1], help="CPU cores both systems use")
    p.add_argument("--kv-cache-gb", type=float, default=2.0, help="KV cache for all layers, GiB")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=128)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens per request")
    p.add_argument("--concurrency", type=_ints, default=[1, 16, 32, 64])
    p.add_argument(
        "--prompts-per-client", type=int, default=4, help="requests = this x concurrency"
    )
    p.add_argument("--min-prompts", type=int, default=8, help="fewest requests in one load")
    p.add_argument("--max-prompts", type=int, default=512, help="most requests in one load")
    p.add_argument("--warmups", type=int, default=2, help="warm-up requests before each load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--wan-delays-ms", type=_floats, default=[0.0, 20.0, 100.0], help="one-way link delays"
    )
    p.add_argument("--wan-concurrency", type=int, default=128)
    p.add_argument(
        "--wan-micro-batches",
        type=_micro_batches,
        default=[1, None],
        help="coordinator LAYERBUS_MICRO_BATCHES values to compare ('default' = unset)",
    )
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds per system")
    p.add_argument("--output-dir", type=Path, default=ROOT / "build" / "bench")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one concurrency (tests)")
    args = p.parse_args(argv)
    usable = os.sched_getaffinity(0)
    if not args.cores or not set(args.cores) <= usable:
        p.error(f"--cores {args.cores} must be CPUs this process may use: {sorted(usable)}")
    if args.smoke:
        args.input_len, args.output_len = 32, 8
        args.concurrency, args.wan_concurrency = [2], 2
        args.min_prompts = args.max_prompts = 2
        args.warmups = 0
        args.wan_delays_ms, args.wan_micro_batches = [10.0], [None]
        args.kv_cache_gb, args.max_num_seqs, args.max_model_len = 0.25, 8, 512
    return args


def num_prompts(args: argparse.Namespace, concurrency: int) -> int:
    """Requests in one load: prompts-per-client x concurrency, within the bounds."""
    return max(args.min_prompts, min(args.max_prompts, args.prompts_per_client * concurrency))


class Bench:
    """Runs the loads one after another and keeps the results file current; main thread."""

    def __init__(self, args: argparse.Namespace, engine: Engine, num_layers: int) -> None:
        self.args = args
        self.engine = engine
        self.num_layers = num_layers
        self.out: Path = args.output_dir
        settings = {k: v for k, v in vars(args).items() if k != "output_dir"}
        settings.update(asdict(engine))
        settings["num_layers"] = num_layers
        settings["wan_micro_batches"] = [
            "default" if m is None else m for m in args.wan_micro_batches
        ]
        if not args.wan_delays_ms:
            settings["wan_concurrency"] = None
        self.results: dict[str, Any] = {"settings": settings, "runs": []}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "bench.json").write_text(json.dumps(self.results, indent=2, default=str))

    def load(
        self,
        started: Started,
        system: str,
        concurrency: int,
        delay_ms: float = 0.0,
        micro_batches: int | None = None,
    ) -> None:
        m = "default" if micro_batches is None else micro_batches
        name = f"{system}-delay{delay_ms:g}-m{m}-c{concurrency}"
        load = Load(
            input_len=self.args.input_len,
            output_len=self.args.output_len,
            concurrency=concurrency,
            num_prompts=num_prompts(self.args, concurrency),
            seed=self.args.seed,
            warmups=self.args.warmups,
        )
        print(f"serve_bench: {name}: {load.num_prompts} requests", flush=True)
        load_before = os.getloadavg()[0]
        cpu_before, window_start = started.children.cpu_seconds(), time.monotonic()
        metrics = run_load(
            load,
            started.url,
            self.engine.served_model_name,
            self.engine.model,
            self.out / "raw",
            name,
        )
        cpu_after, window = started.children.cpu_seconds(), time.monotonic() - window_start
        started.children.check_alive()
        run = {
            "name": name,
            "system": system,
            "delay_ms": delay_ms,
            "micro_batches": micro_batches,
            "concurrency": concurrency,
            "num_prompts": load.num_prompts,
            "metrics": metrics,
            # 1-minute load averages: other work on the machine skews the figures.
            "load_average": [load_before, os.getloadavg()[0]],
            # CPU seconds each process (with its children) spent while `vllm bench serve`
            # ran (its start-up and warm-ups included: cpu_window_s, longer than duration).
            "cpu_s": {
                name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after
            },
            "cpu_window_s": round(window, 2),
            "status": _status(started.url) if system == "layerbus" else None,
        }
        self.results["runs"].append(run)
        self.save()
        print(
            f"serve_bench: {name}: {metrics['output_throughput']:.1f} output tok/s, "
            f"TTFT p50 {metrics['median_ttft_ms']:.1f} ms, "
            f"TPOT p50 {metrics['median_tpot_ms']:.1f} ms",
            flush=True,
        )

    def run(self) -> None:
        args = self.args
        wan = bool(args.wan_delays_ms)
        vllm_levels = sorted(set(args.concurrency) | ({args.wan_concurrency} if wan else set()))
        started = start_vllm(self.engine, self.out / "logs" / "vllm", args.startup_timeout)
        try:
            for c in vllm_levels:
                self.load(started, "vllm", c)
        finally:
            started.children.stop()
        layers = _layers(self.num_layers, args.stages, args.split, args.model)
        lan_levels = set(args.concurrency)
        if wan and 0.0 in args.wan_delays_ms and None in args.wan_micro_batches:
            lan_levels.add(args.wan_concurrency)  # the no-delay, default-M WAN point
        configs: list[tuple[float, int | None, list[int]]] = [(0.0, None, sorted(lan_levels))]
        for delay in args.wan_delays_ms if wan else []:
            for m in args.wan_micro_batches:
                if (delay, m) != (0.0, None):
                    configs.append((delay, m, [args.wan_concurrency]))
        for delay, m, levels in configs:
            label = f"layerbus-delay{delay:g}-m{'default' if m is None else m}"
            started = start_layerbus(
                self.engine,
                layers,
                self.num_layers,
                self.out / "logs" / label,
                args.startup_timeout,
                delay_ms=delay,
                micro_batches=m,
            )
            try:
                for c in levels:
                    self.load(started, "layerbus", c, delay, m)
            finally:
                started.children.stop()

    def write_reports(self) -> None:
        self.save()
        (self.out / "bench.md").write_text(report.markdown(self.results))
        report.plot(self.results, self.out / "bench.png")


def _layers(num_layers: int, stages: int, split: str, model: str) -> list[tuple[int, int]]:
    """Layer ranges per stage: even counts, or even compute (the LM head weighs in)."""
    from services.stage.layers import balanced_split, even_split, head_cost_in_layers

    if split == "even":
        return even_split(num_layers, stages)
    config = json.loads((Path(model) / "config.json").read_text())
    return balanced_split(num_layers, stages, head_cost_in_layers(config))


def _status(url: str) -> Any:
    """The gateway's /status after a load (micro-batches, steps), or None if it fails."""
    try:
        return httpx.get(url + "/status", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401 - checked now rather than after a long run
    except ImportError:
        raise SystemExit(
            "serve_bench: matplotlib is missing; install the bench extra "
            "(pip install -e '.[bench]'; make install does)"
        ) from None
    from shared.engine_settings import model_num_layers

    if not args.model:
        from shared.default_model import prepare_default_model

        args.model = str(prepare_default_model())
    engine = Engine(
        model=args.model,
        served_model_name=args.served_model_name or Path(args.model).name,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_gb=args.kv_cache_gb,
        cores=args.cores,
        seed=args.seed,
    )
    bench = Bench(args, engine, model_num_layers(args.model))
    started_at = time.monotonic()
    bench.run()
    bench.write_reports()
    print(report.markdown(bench.results))
    print(
        f"serve_bench: done in {time.monotonic() - started_at:.0f} s; "
        f"results in {args.output_dir}/bench.{{json,md,png}}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
