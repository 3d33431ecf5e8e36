"""`layerbus plan`: print the split the placement planner would choose; starts nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.coordinator.placement import (
    GIB,
    Placement,
    PlacementError,
    StageCapacity,
    plan,
    size_text,
)
from services.ops.command_settings import CommandSettings

DESCRIPTION = """Print the layer split placement would choose for given stages; starts nothing.

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


class PlanCommand(CommandSettings):
    """`layerbus plan`: stage descriptions in, the planned split out."""

    model_config = SettingsConfigDict(json_schema_extra={"description": DESCRIPTION})

    stage: list[str] = Field(
        default_factory=list,
        description="one stage: NAME,memory-gb=G[,decode-ms=D,prefill-ms=P][,head-ms=H]"
        "[,link-ms=L][,layers=START:END] (repeat for each stage)",
        json_schema_extra={"metavar": "SPEC"},
    )
    stages: list[str] = Field(
        default_factory=list,
        description="JSON file: a list of objects with the same keys (name, memory_gb, "
        'decode_ms, prefill_ms, head_ms, link_ms, layers), {"stages": [...]}, or one object '
        "as `layerbus probe` prints it (repeat for each file)",
        json_schema_extra={"metavar": "FILE"},
    )
    model: str = Field("", description="the model (default: LAYERBUS_MODEL, else the bundled one)")
    dtype: str = Field(
        "", description="weights and KV cache dtype (default: this host's, as a stage would run)"
    )
    kv_tokens: int | None = Field(
        None,
        description="KV cache tokens every stage holds for its layers (default: --max-model-len)",
    )
    prompt_ratio: float = Field(
        1.0, description="prompt tokens per generated token in the workload"
    )
    as_json: bool = Field(False, alias="json", description="print the plan as JSON")

    @classmethod
    def prepare_argv(cls, argv: list[str]) -> list[str]:
        # pydantic-settings reads a list flag's value as comma-separated items, and a stage
        # SPEC holds commas: each --stage/--stages value goes over as one quoted item.
        out = super().prepare_argv(argv)
        for i, arg in enumerate(out):
            name, eq, value = arg.partition("=")
            if name in ("--stage", "--stages") and eq:
                out[i] = f"{name}={json.dumps(value)}"
            elif arg in ("--stage", "--stages") and i + 1 < len(out):
                out[i + 1] = json.dumps(out[i + 1])
        return out

    def cli_cmd(self) -> None:
        sys.exit(main(self))


def main(args: PlanCommand) -> int:
    """Entry point of `layerbus plan`; 0 with a plan printed, 1 when none exists, 2 on bad input."""
    from services.coordinator.model_profile import profile_from_folder
    from services.stage.capacity import prefill_weight
    from shared.engine_settings import EngineSettings

    try:
        items = [parse_stage_spec(spec) for spec in args.stage]
        for path in args.stages:
            items += read_stages_file(path)
        if not items:
            raise PlanInputError("no stages: give --stage SPEC (repeatable) or --stages FILE")
        check_speeds(items)
        given: dict[str, Any] = {"model": args.model} if args.model else {}
        engine = EngineSettings(**given)
        dtype = args.dtype or engine.platform_choice().dtype
        model = profile_from_folder(engine.resolved_model(), dtype)
        kv_tokens = args.kv_tokens if args.kv_tokens is not None else engine.max_model_len
        stages = [capacity_of(item, model.num_layers) for item in items]
        weight = prefill_weight(args.prompt_ratio)
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
    if args.as_json:
        print(plan_json(placement))
        return 0
    per_layer = model.layer_bytes + kv_tokens * model.kv_bytes_per_token
    header = (
        f"plan for {Path(engine.resolved_model()).name} ({model.num_layers} layers, {dtype}: "
        f"{size_text(per_layer)} a layer with KV cache for {kv_tokens} tokens)"
    )
    print(format_plan(placement, header))
    return 0
