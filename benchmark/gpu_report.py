"""benchmark/gpu_bench.py's summary as ratios and a Markdown table (pure: no servers).

summary["loads"][system][str(concurrency)] holds a load's figures (benchmark/load.py's
METRICS); the reference system is summary["settings"]["reference"], by default `vllm serve`
with its defaults ("vllm-default").
"""

from __future__ import annotations

from typing import Any

from benchmark.report import ratio

REFERENCE = "vllm-default"
# Settings the table's heading names ("?" where a summary lacks one).
SETTINGS = (
    "device",
    "model_name",
    "load_format",
    "input_len",
    "output_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "greedy_tokens",
)


def reference(summary: dict[str, Any]) -> str:
    """The system every ratio is taken against."""
    return str(summary.get("settings", {}).get("reference") or REFERENCE)


def _metric(summary: dict[str, Any], system: str, concurrency: str, key: str) -> float | None:
    value = summary.get("loads", {}).get(system, {}).get(concurrency, {}).get(key)
    return float(value) if value is not None else None


def ratios(summary: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per system and concurrency: output throughput and median TPOT over the reference's."""
    ref = reference(summary)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for system, loads in summary.get("loads", {}).items():
        if system == ref:
            continue
        out[system] = {}
        for c in loads:
            tput = [_metric(summary, s, c, "output_throughput") for s in (system, ref)]
            tpot = [_metric(summary, s, c, "median_tpot_ms") for s in (system, ref)]
            out[system][c] = {"throughput": ratio(*tput), "tpot": ratio(*tpot)}
    return out


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """Settings, one row per system and concurrency with ratios, greedy equality, errors."""
    s = {k: "?" for k in SETTINGS} | summary.get("settings", {})
    labels: dict[str, str] = summary.get("labels", {})
    ref = reference(summary)
    lines = [
        f"# layerbus vs `vllm serve` on {s['device']}",
        "",
        f"Model `{s['model_name']}` ({s['load_format']} weights), `vllm bench serve` random "
        f"{s['input_len']} in / {s['output_len']} out, max_num_seqs {s['max_num_seqs']}, "
        f"max_num_batched_tokens {s['max_num_batched_tokens']}, max_model_len "
        f"{s['max_model_len']}. Ratios: against {labels.get(ref, ref)} at the same "
        "concurrency (throughput: higher is better; TPOT: lower is better).",
        "",
        "| system | concurrency | output tok/s | TPOT p50 ms | TTFT p50 ms "
        "| tok/s ratio | TPOT ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    rel = ratios(summary)
    for system, loads in summary.get("loads", {}).items():
        for c in loads:
            r = rel.get(system, {}).get(c, {})
            lines.append(
                f"| {labels.get(system, system)} | {c} "
                f"| {_fmt(_metric(summary, system, c, 'output_throughput'), 0)} "
                f"| {_fmt(_metric(summary, system, c, 'median_tpot_ms'), 2)} "
                f"| {_fmt(_metric(summary, system, c, 'median_ttft_ms'), 1)} "
                f"| {_fmt(r.get('throughput'), 2)} | {_fmt(r.get('tpot'), 2)} |"
            )
    for key, title in (
        ("ready_s", "Start-up to first answer, s"),
        ("rejoin_s", "Last stage killed and started again, s to the next answer"),
    ):
        seconds = summary.get(key, {})
        if seconds:
            lines += [
                "",
                f"{title}: " + ", ".join(f"{labels.get(k, k)} {v:.0f}" for k, v in seconds.items()),
            ]
    greedy = summary.get("greedy", {})
    if greedy:
        lines += [
            "",
            "Greedy equality with single-process vLLM (the stages' settings), "
            f"{s['greedy_tokens']} tokens per prompt: "
            + ", ".join(f"{labels.get(k, k)} {v}" for k, v in greedy.items()),
        ]
    lines += phase_lines(summary)
    errors = summary.get("errors", {})
    if errors:
        lines += ["", "Errors (details in summary.json): " + ", ".join(sorted(errors))]
    return "\n".join(lines) + "\n"


def phase_lines(summary: dict[str, Any]) -> list[str]:
    """Per layerbus system: each service's step phases, mean ms per step at each concurrency."""
    labels: dict[str, str] = summary.get("labels", {})
    lines: list[str] = []
    for system, loads in summary.get("phases", {}).items():
        levels = list(loads)
        means: dict[tuple[str, str], dict[str, float]] = {}
        for c, rows in loads.items():
            for row in rows:
                means.setdefault((row["who"], row["phase"]), {})[c] = float(row["mean_ms"])
        lines += [
            "",
            f"Step phases of {labels.get(system, system)}, mean ms per step "
            "(shared/step_phases.py; a stage's hop is per activation message):",
            "",
            "| service | phase | " + " | ".join(f"c={c}" for c in levels) + " |",
            "|---|---|" + "---|" * len(levels),
        ]
        for (who, phase), by_c in means.items():
            cells = " | ".join(_fmt(by_c.get(c), 3) for c in levels)
            lines.append(f"| {who} | {phase} | {cells} |")
    return lines
