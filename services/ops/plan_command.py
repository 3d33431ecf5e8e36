"""`layerbus plan`: print the split the placement planner would choose; starts nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.coordinator.placement import (
    GIB,
    Placement,
    PlacementError,
    StageCapacity,
    plan,
    size_text,
)

USAGE = """usage: layerbus plan [--stage SPEC ...] [--stages FILE] [--model DIR] [--dtype DTYPE]
                     [--kv-tokens N] [--prompt-ratio R] [--json]

  --stage SPEC       one stage: NAME,memory-gb=G[,decode-ms=D,prefill-ms=P][,head-ms=H]
                     [,link-ms=L][,layers=START:END]  (repeat for each stage)
  --stages FILE      JSON: a list of objects with the same keys (name, memory_gb, decode_ms,
                     prefill_ms, head_ms, link_ms, layers), {"stages": [...]}, or one object
                     as `layerbus probe` prints it (repeat for each file)
  --model DIR        the model (default: LAYERBUS_MODEL, else the bundled one)
  --dtype DTYPE      weights and KV cache dtype (default: this host's, as a stage would run)
  --kv-tokens N      KV cache tokens every stage holds for its layers (default: --max-model-len)
  --prompt-ratio R   prompt tokens per generated token in the workload (default 1.0)
  --json             print the plan as JSON

decode-ms / prefill-ms: one decoder layer's forward at decode and prefill size on that stage
(measured by `layerbus probe`); give them for every stage or for none (equal speeds).
head-ms: the final norm and LM head at decode size (default: estimated from decode-ms and
the model's shape); also for every stage or for none.
link-ms: what each step spends on the stage's link (its round trip to the coordinator).
step ms: a stage's predicted time for one decode step of the probe's size (16 sequences)
plus its share of prefill chunks, the LM head on the last stage, and its link.
"""

KEYS = ("name", "memory_gb", "decode_ms", "prefill_ms", "head_ms", "link_ms", "layers", "device")


class PlanInputError(ValueError):
    """A stage description `layerbus plan` cannot read; the message says which and why."""


def split_repeated(argv: list[str], flag: str) -> tuple[list[str | None], list[str]]:
    """The values of every `flag` (None for one without a value), and the other arguments."""
    values: list[str | None] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            values.append(argv[i + 1] if i + 1 < len(argv) else None)
            i += 2
            continue
        if arg.startswith(flag + "="):
            values.append(arg.removeprefix(flag + "="))
        else:
            rest.append(arg)
        i += 1
    return values, rest


def parse_stage_spec(spec: str) -> dict[str, str]:
    """'NAME,key=value,...' -> {'name': NAME, key: value} (dashes in keys become underscores)."""
    name, *pairs = spec.split(",")
    out = {"name": name.strip()}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise PlanInputError(f"--stage {spec!r}: expected key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def read_stages_file(path: str) -> list[dict[str, Any]]:
    """The stage objects of a JSON file: a list, an object with a "stages" list, or one stage."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise PlanInputError(f"--stages {path}: {err}") from None
    if isinstance(data, dict):
        # {"stages": [...]}, or one stage object as `layerbus probe` prints it.
        data = data.get("stages", [data])
    items = data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise PlanInputError(f"--stages {path}: expected a list of stage objects")
    return [{k.replace("-", "_"): v for k, v in item.items()} for item in items]


def _number(item: dict[str, Any], key: str, default: float | None = None) -> float:
    value = item.get(key, default)
    if value is None:
        raise PlanInputError(f"stage {item.get('name', '?')!r}: {key.replace('_', '-')} missing")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PlanInputError(
            f"stage {item.get('name', '?')!r}: {key.replace('_', '-')}={value!r} is not a number"
        ) from None


def capacity_of(item: dict[str, Any], num_layers: int) -> StageCapacity:
    """One stage description -> the planner's StageCapacity."""
    from services.stage.layers import LayerRangeError, parse_layers

    name = str(item.get("name") or "")
    unknown = sorted(set(item) - set(KEYS))
    if not name or unknown:
        raise PlanInputError(
            f"stage {item}: needs a name; known keys: {', '.join(KEYS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    pinned = None
    if item.get("layers"):
        try:
            pinned = parse_layers(str(item["layers"]), num_layers)
        except LayerRangeError as err:
            raise PlanInputError(f"stage {name!r}: {err}") from None
    try:
        return StageCapacity(
            name=name,
            memory_bytes=int(_number(item, "memory_gb") * GIB),
            decode_s=_number(item, "decode_ms", 1.0) / 1000,
            prefill_s=_number(item, "prefill_ms", 1.0) / 1000,
            link_s=_number(item, "link_ms", 0.0) / 1000,
            pinned=pinned,
            head_s=_number(item, "head_ms") / 1000 if "head_ms" in item else None,
        )
    except ValueError as err:
        raise PlanInputError(str(err)) from None


def check_speeds(items: list[dict[str, Any]]) -> None:
    """Measured speeds for every stage or for none: a default beside a measure misleads."""
    for key in ("decode_ms", "prefill_ms", "head_ms"):
        given = [key in item for item in items]
        if any(given) and not all(given):
            missing = [str(i.get("name")) for i, g in zip(items, given, strict=True) if not g]
            raise PlanInputError(
                f"{key.replace('_', '-')} is given for some stages but not for "
                f"{', '.join(missing)}; give it for every stage or for none"
            )


def format_plan(placement: Placement, header: str) -> str:
    """The plan as a table: one line per chain stage, then standbys and the slowest stage."""
    lines = [header, f"  {'stage':16} {'layers':8} {'step ms':>8}  memory used / cap"]
    for a in placement.chain:
        lines.append(
            f"  {a.stage:16} {f'{a.start}:{a.end}':8} {a.step_s * 1000:8.2f}  "
            f"{size_text(a.memory_bytes)} / {size_text(a.memory_limit)}"
            + ("  (pinned)" if a.pinned else "")
        )
    if placement.standby:
        lines.append(f"standby: {', '.join(placement.standby)}")
    lines.append(
        f"slowest stage: {placement.bottleneck}, {placement.step_s * 1000:.2f} ms per step"
    )
    return "\n".join(lines)


def plan_json(placement: Placement) -> str:
    return json.dumps(
        {
            "chain": [
                {
                    "name": a.stage,
                    "layers": f"{a.start}:{a.end}",
                    "pinned": a.pinned,
                    "step_ms": round(a.step_s * 1000, 3),
                    "memory_gb": round(a.memory_bytes / GIB, 3),
                    "memory_cap_gb": round(a.memory_limit / GIB, 3),
                }
                for a in placement.chain
            ],
            "standby": list(placement.standby),
            "step_ms": round(placement.step_s * 1000, 3),
        },
        indent=2,
    )


def main(argv: list[str]) -> int:
    """Entry point of `layerbus plan`; 0 with a plan printed, 1 when none exists, 2 on bad input."""
    from services.coordinator.model_profile import profile_from_folder
    from services.ops.cli import build, parse_flags
    from services.stage.capacity import prefill_weight
    from shared.engine_settings import EngineSettings

    if "--help" in argv or "-h" in argv:
        print(USAGE)
        return 0
    specs, rest = split_repeated(argv, "--stage")
    files, rest = split_repeated(rest, "--stages")
    flags = parse_flags(rest, frozenset({"json"}))
    known = {"model", "dtype", "kv_tokens", "prompt_ratio", "json"}
    unknown = sorted(set(flags) - known)
    if unknown or None in specs or None in files:
        problem = f"unknown setting(s) {unknown}" if unknown else "--stage(s) without a value"
        print(f"layerbus plan: {problem}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        items = [parse_stage_spec(s) for s in specs if s is not None]
        for path in files:
            items += read_stages_file(str(path))
        if not items:
            raise PlanInputError("no stages: give --stage SPEC (repeatable) or --stages FILE")
        check_speeds(items)
        [engine] = build([EngineSettings], {k: v for k, v in flags.items() if k == "model"})
        dtype = flags.get("dtype") or engine.platform_choice().dtype
        model = profile_from_folder(engine.resolved_model(), dtype)
        kv_tokens = int(flags.get("kv_tokens", engine.max_model_len))
        stages = [capacity_of(item, model.num_layers) for item in items]
        weight = prefill_weight(float(flags.get("prompt_ratio", 1.0)))
        placement = plan(model, stages, kv_tokens=kv_tokens, prefill_weight=weight)
    except PlacementError as err:
        print(f"layerbus plan: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # PlanInputError and unreadable numbers
        print(f"layerbus plan: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"layerbus plan: cannot read the model's config.json (--model): {err}", file=sys.stderr
        )
        return 2
    except KeyError as err:
        print(f"layerbus plan: the model's config.json has no {err}", file=sys.stderr)
        return 2
    if flags.get("json", "false").lower() in ("true", "1", "yes", "on"):
        print(plan_json(placement))
        return 0
    per_layer = model.layer_bytes + kv_tokens * model.kv_bytes_per_token
    header = (
        f"plan for {Path(engine.resolved_model()).name} ({model.num_layers} layers, {dtype}: "
        f"{size_text(per_layer)} a layer with KV cache for {kv_tokens} tokens)"
    )
    print(format_plan(placement, header))
    return 0
