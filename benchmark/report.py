"""The benchmark's results as a Markdown table and a PNG plot (pure: no servers).

A run is one `vllm bench serve` invocation against one system:
{"system": "vllm" | "layerbus", "delay_ms": float, "micro_batches": int | None,
 "concurrency": int, "num_prompts": int, "metrics": {...}} where metrics
holds the keys of benchmark/load.py's METRICS and micro_batches None means
the coordinator's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Run = dict[str, Any]


def _find(runs: list[Run], **where: Any) -> Run | None:
    for run in runs:
        if all(run.get(k) == v for k, v in where.items()):
            return run
    return None


def _metric(run: Run | None, key: str) -> float | None:
    if run is None:
        return None
    value = run["metrics"].get(key)
    return float(value) if value is not None else None


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _m_label(micro_batches: int | None) -> str:
    return "default" if micro_batches is None else str(micro_batches)


def lan_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per concurrency: both systems without delay, and layerbus/vllm ratios."""
    out = []
    levels = sorted(
        {r["concurrency"] for r in runs if r["delay_ms"] == 0 and r["micro_batches"] is None}
    )
    for c in levels:
        base = _find(runs, system="vllm", concurrency=c)
        ours = _find(runs, system="layerbus", delay_ms=0, micro_batches=None, concurrency=c)
        out.append(
            {
                "concurrency": c,
                "vllm": base,
                "layerbus": ours,
                "throughput_ratio": ratio(
                    _metric(ours, "output_throughput"), _metric(base, "output_throughput")
                ),
                "ttft_p50_ratio": ratio(
                    _metric(ours, "median_ttft_ms"), _metric(base, "median_ttft_ms")
                ),
                "tpot_p50_ratio": ratio(
                    _metric(ours, "median_tpot_ms"), _metric(base, "median_tpot_ms")
                ),
            }
        )
    return out


def wan_rows(runs: list[Run], concurrency: int) -> list[dict[str, Any]]:
    """layerbus at `concurrency` for every delay and micro-batch setting, with ratios."""
    base = _find(runs, system="vllm", concurrency=concurrency)
    ours = [r for r in runs if r["system"] == "layerbus" and r["concurrency"] == concurrency]
    ours.sort(key=lambda r: (r["delay_ms"], r["micro_batches"] is None, r["micro_batches"] or 0))
    out = []
    for run in ours:
        m1 = _find(
            runs,
            system="layerbus",
            delay_ms=run["delay_ms"],
            micro_batches=1,
            concurrency=concurrency,
        )
        tps = _metric(run, "output_throughput")
        out.append(
            {
                "run": run,
                "vs_vllm": ratio(tps, _metric(base, "output_throughput")),
                "vs_m1": None if run is m1 else ratio(tps, _metric(m1, "output_throughput")),
            }
        )
    return out


def _cells(run: Run | None) -> list[str]:
    return [
        _fmt(_metric(run, "output_throughput")),
        _fmt(_metric(run, "median_ttft_ms")),
        _fmt(_metric(run, "p99_ttft_ms")),
        _fmt(_metric(run, "median_tpot_ms")),
        _fmt(_metric(run, "p99_tpot_ms")),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report: settings, the LAN table and the WAN table."""
    runs: list[Run] = results["runs"]
    s = results["settings"]
    lines = [
        "# layerbus vs single-process vllm serve",
        "",
        f"Model `{s['model']}`, {s['dtype']}, {s['stages']} stages, cores {s['cores']}, "
        f"KV cache {s['kv_cache_gb']} GiB in all, max_num_seqs {s['max_num_seqs']}; "
        f"`vllm bench serve` random dataset, seed {s['seed']}, "
        f"{s['input_len']} in / {s['output_len']} out. Times in ms.",
        "",
        "## No delay",
        "",
    ]
    metric_header = ["output tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"]
    rows = []
    for row in lan_rows(runs):
        rows.append([str(row["concurrency"]), "vllm serve", *_cells(row["vllm"]), "", "", ""])
        rows.append(
            [
                str(row["concurrency"]),
                "layerbus",
                *_cells(row["layerbus"]),
                _fmt(row["throughput_ratio"], 2),
                _fmt(row["ttft_p50_ratio"], 2),
                _fmt(row["tpot_p50_ratio"], 2),
            ]
        )
    ratios = ["tok/s ratio", "TTFT p50 ratio", "TPOT p50 ratio"]
    lines += _table(["concurrency", "system", *metric_header, *ratios], rows)
    wan_c = s.get("wan_concurrency")
    wan = wan_rows(runs, wan_c) if wan_c else []
    if wan:
        lines += [
            "",
            f"## Delay on every inter-host link (layerbus, concurrency {wan_c})",
            "",
            "Ratios: output tok/s against vllm serve without delay at the same concurrency, "
            "and against micro-batches = 1 at the same delay.",
            "",
        ]
        rows = [
            [
                _fmt(row["run"]["delay_ms"], 0),
                _m_label(row["run"]["micro_batches"]),
                *_cells(row["run"]),
                _fmt(row["vs_vllm"], 2),
                _fmt(row["vs_m1"], 2),
            ]
            for row in wan
        ]
        header = ["one-way delay ms", "micro-batches", *metric_header, "vs vllm", "vs M=1"]
        lines += _table(header, rows)
    lines += cpu_lines(runs)
    failed = [r for r in runs if r["metrics"].get("failed")]
    if failed:
        lines += [
            "",
            "Failed requests: "
            + ", ".join(f"{r['name']}: {r['metrics']['failed']}" for r in failed),
        ]
    return "\n".join(lines) + "\n"


def cpu_lines(runs: list[Run]) -> list[str]:
    """Where the cores went: each process's CPU seconds during each load, as a share of it."""
    rows = []
    for run in runs:
        cpu, window = run.get("cpu_s"), run.get("cpu_window_s")
        if not cpu or not window:
            continue
        shares = ", ".join(f"{name} {seconds / window:.2f}" for name, seconds in cpu.items())
        rows.append([run["name"], _fmt(window), _fmt(sum(cpu.values()) / window, 2), shares])
    if not rows:
        return []
    return [
        "",
        "## CPU use during each load",
        "",
        "Cores busy on average (CPU seconds / wall seconds while `vllm bench serve` ran, its "
        "start-up and warm-ups included), in all and per process with its children; the load "
        "generator itself is not counted.",
        "",
        *_table(["load", "wall s", "cores busy", "per process"], rows),
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    """PNG: output tok/s vs concurrency for both systems; WAN runs as bars beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: list[Run] = results["runs"]
    rows = lan_rows(runs)
    wan_c = results["settings"].get("wan_concurrency")
    wan = wan_rows(runs, wan_c) if wan_c else []
    fig, axes = plt.subplots(1, 2 if wan else 1, figsize=(12 if wan else 6, 4.5), squeeze=False)
    ax = axes[0][0]
    for system, label in (("vllm", "vllm serve (1 process)"), ("layerbus", "layerbus")):
        points = [
            (row["concurrency"], _metric(row[system], "output_throughput"))
            for row in rows
            if row[system] is not None
        ]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    levels = [row["concurrency"] for row in rows]
    if levels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens/s")
    ax.set_title("No delay")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if wan:
        ax = axes[0][1]
        labels = [
            f"{r['run']['delay_ms']:g} ms\nM={_m_label(r['run']['micro_batches'])}" for r in wan
        ]
        values = [_metric(r["run"], "output_throughput") or 0.0 for r in wan]
        ax.bar(range(len(values)), values, color="tab:orange")
        ax.set_xticks(range(len(values)), labels)
        base = _metric(_find(runs, system="vllm", concurrency=wan_c), "output_throughput")
        if base is not None:
            ax.axhline(base, color="tab:blue", linestyle="--", label="vllm serve, no delay")
            ax.legend()
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"layerbus with link delay, concurrency {wan_c}")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
