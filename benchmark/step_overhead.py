"""Where a step's time goes: the token loop's phases, measured on a running pipeline.

Starts layerbus (benchmark/systems.py: coordinator, stages, gateway; optionally
behind delay proxies), drives it with `vllm bench serve` at each concurrency,
and reads `layerbus_step_phase_seconds` (shared/step_phases.py) and each
stage's `layerbus_stage_hop_seconds` from every service's /metrics before and
after each load. Prints and writes the mean milliseconds per step of each
phase: coordinator schedule / plan / send / update / publish, each stage's
decode / ring_wait / forward / forward_send and its hop.

    python -m benchmark.step_overhead                  # bundled model, 2 stages
    python -m benchmark.step_overhead --smoke          # tiny sizes, for tests
    python -m benchmark.step_overhead --sync           # the coordinator without async scheduling
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmark.load import Load, run_load
from benchmark.processes import ROOT
from benchmark.systems import Engine, start_layerbus

WANTED = ("layerbus_step_phase_seconds", "layerbus_stage_hop_seconds")
Key = tuple[str, str]  # (who, phase): who is "coordinator" or a stage name


@dataclass(frozen=True)
class Phase:
    """One phase over one load: observations and mean milliseconds each."""

    who: str
    phase: str
    count: float
    mean_ms: float


def scrape(text: str, who: str) -> dict[Key, tuple[float, float]]:
    """(sum seconds, count) per phase from one service's /metrics text."""
    out: dict[Key, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            base, _, part = sample.name.rpartition("_")
            if base not in WANTED or part not in ("sum", "count"):
                continue
            phase = sample.labels.get("phase", "hop")
            s, c = out.get((who, phase), (0.0, 0.0))
            if part == "sum":
                s += sample.value
            else:
                c += sample.value
            out[(who, phase)] = (s, c)
    return out


def phases(
    before: dict[Key, tuple[float, float]], after: dict[Key, tuple[float, float]]
) -> list[Phase]:
    """What each phase added during one load (after minus before)."""
    rows = []
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        count = c1 - c0
        if count > 0:
            rows.append(Phase(key[0], key[1], count, 1000 * (s1 - s0) / count))
    return rows


def table(rows: list[Phase]) -> str:
    lines = ["| service | phase | steps | mean ms |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.who} | {r.phase} | {r.count:.0f} | {r.mean_ms:.3f} |")
    return "\n".join(lines)


def metrics_urls(gateway: str) -> dict[str, str]:
    """Each service's /metrics URL, named as /status lists them."""
    status = httpx.get(gateway + "/status", timeout=30).json()
    urls = {"coordinator": status["coordinator"]["metrics"]}
    for stage in status["stages"]:
        urls[stage["name"]] = stage["metrics"]
    return {who: url for who, url in urls.items() if url}


def read_all(urls: dict[str, str]) -> dict[Key, tuple[float, float]]:
    out: dict[Key, tuple[float, float]] = {}
    for who, url in urls.items():
        out.update(scrape(httpx.get(url, timeout=30).text, who))
    return out


class PhaseProbe:
    """Reads every service's step phases before and after a load (the caller's thread)."""

    def __init__(self, gateway: str) -> None:
        self.urls = metrics_urls(gateway)

    def read(self) -> dict[Key, tuple[float, float]]:
        return read_all(self.urls)

    def since(self, before: dict[Key, tuple[float, float]]) -> list[dict[str, Any]]:
        """Each phase's steps and mean ms since `before`, as JSON-ready rows."""
        return [r.__dict__ for r in phases(before, self.read())]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmark.step_overhead", description=__doc__)
    p.add_argument("--model", default="", help="HF model folder (default: the bundled one)")
    p.add_argument("--layers", default="0:17,17:30", help="stage ranges START:END,...")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay on every link")
    p.add_argument("--concurrency", default="1,64")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--num-prompts", type=int, default=0, help="default: 4 x concurrency")
    p.add_argument("--sync", action="store_true", help="coordinator without async scheduling")
    p.add_argument("--output-dir", type=Path, default=ROOT / "build" / "step-overhead")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one concurrency")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from shared.default_model import prepare_default_model
    from shared.engine_settings import model_num_layers

    model = args.model or str(prepare_default_model())
    layers = [tuple(int(x) for x in r.split(":")) for r in args.layers.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.smoke:
        levels, args.input_len, args.output_len = [2], 16, 8
    engine = Engine(model=model, served_model_name=Path(model).name)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    env = {"LAYERBUS_ASYNC_SCHEDULING": "0"} if args.sync else {}
    started = start_layerbus(
        engine,
        [(a, b) for a, b in layers],
        model_num_layers(model),
        out / "logs",
        900.0,
        delay_ms=args.delay_ms,
        extra_coordinator_env=env,
    )
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    try:
        urls = metrics_urls(started.url)
        for c in levels:
            load = Load(args.input_len, args.output_len, c, args.num_prompts or 4 * c)
            before = read_all(urls)
            figures = run_load(load, started.url, engine.served_model_name, model, out, f"c{c}")
            rows = phases(before, read_all(urls))
            results[f"c{c}"] = {"load": figures, "phases": [r.__dict__ for r in rows]}
            print(f"\nconcurrency {c}: {figures.get('output_throughput', 0):.1f} tok/s")
            print(table(rows))
            (out / "step_overhead.json").write_text(json.dumps(results, indent=1))
    finally:
        started.children.stop()
    md = [
        f"# Step overhead ({'sync' if args.sync else 'async'} scheduling, "
        f"{args.delay_ms:g} ms links, layers {args.layers})"
    ]
    for c in levels:
        rows = [Phase(**r) for r in results.get(f"c{c}", {}).get("phases", [])]
        md += ["", f"## concurrency {c}", "", table(rows)]
    (out / "step_overhead.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
