"""Pure planning for `layerbus serve`: which flags reach which child, and each child's command.

No processes here (services/ops/launcher.py starts and supervises them). The launcher
owns the addresses, names and core bindings of its children; every other setting
given to `layerbus serve` is forwarded, unchanged, to each child whose settings
have a field of that name (engine settings reach the coordinator and every stage,
transport settings every child, gateway settings the gateway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

CHILD_COMMANDS = ("coordinator", "stage", "gateway")

# Settings the launcher sets itself for each child: never forwarded.
# --metrics-advertise names one process's scrape address, so one value for all is wrong.
LAUNCHER_OWNED: dict[str, frozenset[str]] = {
    "coordinator": frozenset({"bind", "model", "metrics_port", "metrics_advertise"}),
    "stage": frozenset(
        {
            "layers",
            "coordinator",
            "bind",
            "advertise",
            "name",
            "threads",
            "model",
            "metrics_port",
            "metrics_advertise",
        }
    ),
    "gateway": frozenset({"host", "port", "coordinator", "model", "metrics_advertise"}),
}

# Values that let a child's settings class validate forwarded flags on their own.
_PLACEHOLDERS: dict[str, str] = {"layers": "0:1"}


class ServeFlagError(ValueError):
    """A flag `layerbus serve` cannot place or a forwarded value that does not validate."""


@dataclass(frozen=True)
class RoutedFlags:
    """The flags of one `layerbus serve` command line, split by destination."""

    own: dict[str, str]
    children: dict[str, dict[str, str]]


def _fields(classes: Sequence[type[BaseModel]]) -> set[str]:
    return {name for cls in classes for name in cls.model_fields}


def route_flags(
    flags: dict[str, str],
    own: Sequence[type[BaseModel]],
    children: Mapping[str, Sequence[type[BaseModel]]],
) -> RoutedFlags:
    """Split flags into the launcher's own settings and what each child receives.

    A name the launcher's own classes know stays with the launcher, except the
    engine shape (also in `own`), which is both used and forwarded. Raises
    ServeFlagError for a name no one knows or a value a child would refuse.
    """
    own_names = _fields(own)
    routed: dict[str, dict[str, str]] = {command: {} for command in children}
    placed: set[str] = set()
    for command, classes in children.items():
        allowed = _fields(classes) - LAUNCHER_OWNED.get(command, frozenset())
        for name, value in flags.items():
            if name in allowed:
                routed[command][name] = value
                placed.add(name)
    unknown = sorted(set(flags) - placed - own_names)
    if unknown:
        valid = sorted(
            own_names
            | {
                n
                for command, classes in children.items()
                for n in _fields(classes) - LAUNCHER_OWNED.get(command, frozenset())
            }
        )
        raise ServeFlagError(
            f"unknown setting(s) {['--' + n.replace('_', '-') for n in unknown]} for "
            f"`layerbus serve`; valid: {', '.join('--' + n.replace('_', '-') for n in valid)}"
        )
    for command, classes in children.items():
        for cls in classes:
            mine = {k: v for k, v in routed[command].items() if k in cls.model_fields}
            if not mine:
                continue
            needed = {
                k: v
                for k, v in _PLACEHOLDERS.items()
                if k in cls.model_fields and cls.model_fields[k].is_required()
            }
            try:
                cls(**{**needed, **mine})
            except ValidationError as err:
                raise ServeFlagError(f"bad setting for the {command}:\n{err}") from None
    return RoutedFlags(own={k: v for k, v in flags.items() if k in own_names}, children=routed)


def as_args(flags: dict[str, str]) -> list[str]:
    """--name=value arguments (the = form keeps boolean and negative values unambiguous)."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in flags.items()]


@dataclass(frozen=True)
class ChildSpec:
    """One child process of `layerbus serve`: its name, CLI arguments, extra env and cores."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cpus: tuple[int, ...] = ()


def stage_name(start: int, end: int, standby: bool) -> str:
    return f"stage-{start}-{end}" + ("-standby" if standby else "")


def core_bindings(cpus: list[int], count: int) -> list[tuple[int, ...]]:
    """Give `count` stage processes their own cores: equal disjoint slices when there
    are enough, else one core each, round robin (processes then share cores)."""
    if count <= 0:
        return []
    if not cpus:
        return [() for _ in range(count)]
    if count <= len(cpus):
        share = len(cpus) // count
        return [tuple(cpus[k * share : (k + 1) * share]) for k in range(count)]
    return [(cpus[k % len(cpus)],) for k in range(count)]


@dataclass(frozen=True)
class ServePlan:
    """Inputs that decide every child of `layerbus serve`."""

    model: str
    ranges: list[tuple[int, int]]
    coordinator_address: str
    host: str
    port: int
    kv_cache_gb: float
    standby: bool = False
    metrics_port: int = 0
    cpus: list[int] = field(default_factory=list)


def plan_children(
    plan: ServePlan, forwarded: dict[str, dict[str, str]], metrics_capable: set[str]
) -> list[ChildSpec]:
    """The coordinator, one stage per range (plus a standby each), then the gateway.

    `metrics_capable` names the child commands whose settings have `metrics_port`:
    on one host each gets its own port (coordinator first, then the stages).
    """
    next_metrics = plan.metrics_port

    def metrics_args(command: str) -> list[str]:
        nonlocal next_metrics
        if command not in metrics_capable:
            return []
        if not plan.metrics_port:
            return ["--metrics-port=0"]
        port = next_metrics
        next_metrics += 1
        return [f"--metrics-port={port}"]

    fwd = {command: as_args(forwarded.get(command, {})) for command in CHILD_COMMANDS}
    children = [
        ChildSpec(
            "coordinator",
            ["coordinator", f"--bind={plan.coordinator_address}", f"--model={plan.model}"]
            + metrics_args("coordinator")
            + fwd["coordinator"],
        )
    ]
    stages = [(r, False) for r in plan.ranges]
    if plan.standby:
        stages += [(r, True) for r in plan.ranges]
    bindings = core_bindings(plan.cpus, len(stages))
    for ((start, end), standby), cpus in zip(stages, bindings, strict=True):
        name = stage_name(start, end, standby)
        args = ["stage", f"--layers={start}:{end}", f"--name={name}"]
        args += [f"--coordinator={plan.coordinator_address}", f"--model={plan.model}"]
        if "kv_cache_gb" not in forwarded.get("stage", {}):
            args.append(f"--kv-cache-gb={plan.kv_cache_gb}")
        if cpus:
            args.append(f"--threads={len(cpus)}")
        args += metrics_args("stage") + fwd["stage"]
        children.append(ChildSpec(name, args, cpus=cpus))
    gateway = ["gateway", f"--host={plan.host}", f"--port={plan.port}"]
    gateway += [f"--coordinator={plan.coordinator_address}", f"--model={plan.model}"]
    children.append(ChildSpec("gateway", gateway + fwd["gateway"]))
    return children
