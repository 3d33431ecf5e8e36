"""The `layerbus` command: coordinator, stage, gateway and serve (all on one host)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

USAGE = """usage: layerbus COMMAND [--setting value ...]

commands:
  serve        gateway + coordinator + stages on this host (what `make serve` runs)
  coordinator  the scheduler; stages and gateways connect to it
  stage        one layer slice, e.g. layerbus stage --layers 0:15 --coordinator tcp://HOST:5555
  gateway      the OpenAI-compatible HTTP API
  prepare-model  convert the bundled default model once and print its folder
  keys generate DIR --name NAME   write DIR/NAME.key (public) and DIR/NAME.key_secret
  health       container health check: layerbus health URL|tcp://COORDINATOR [STAGE]
  plan         the layer split placement would choose for given stage capacities; starts
               nothing (layerbus plan --help)
  probe        this host's memory and measured layer speed, as JSON for `layerbus plan`
  prometheus-targets GATEWAY_URL [FILE]   every service's metrics address, as Prometheus
               file-based discovery JSON (from /status; LAYERBUS_API_KEY if it needs one)

Every setting is also read from its LAYERBUS_* environment variable.
`layerbus COMMAND --help` lists the settings of a command.
"""


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_flags(argv: list[str], booleans: frozenset[str] = frozenset()) -> dict[str, str]:
    """--name value / --name=value pairs; dashes in names become underscores.

    A name in `booleans` also works bare (`--enable-prefix-caching` = true) and
    negated (`--no-enable-prefix-caching` = false); a following true/false word
    is taken as its value.
    """
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise SystemExit(
                f"layerbus: unexpected argument {arg!r}; settings look like --name value"
            )
        raw, eq, value = arg[2:].partition("=")
        name = raw.replace("-", "_")
        negated = name.startswith("no_") and name[3:] in booleans and name not in booleans
        if negated:
            if eq:
                raise SystemExit(f"layerbus: --{raw} takes no value")
            flags[name[3:]] = "false"
            i += 1
            continue
        if not eq:
            following = argv[i + 1] if i + 1 < len(argv) else None
            if name in booleans:
                if following is not None and following.lower() in TRUE_WORDS | FALSE_WORDS:
                    value = following
                    i += 1
                else:
                    value = "true"
            elif following is None:
                raise SystemExit(f"layerbus: --{raw} needs a value")
            else:
                value = following
                i += 1
        flags[name] = value
        i += 1
    return flags


def boolean_fields(classes: list[type[BaseModel]]) -> frozenset[str]:
    """Names of the settings that are plain booleans (usable as bare flags)."""
    return frozenset(
        name
        for cls in classes
        for name, field in cls.model_fields.items()
        if field.annotation is bool
    )


def build(classes: list[type[BaseModel]], flags: dict[str, str]) -> list[Any]:
    """Instantiate each settings class with the flags that name its fields."""
    known = {name for cls in classes for name in cls.model_fields}
    unknown = sorted(set(flags) - known)
    if unknown:
        valid = ", ".join("--" + n.replace("_", "-") for n in sorted(known))
        raise SystemExit(f"layerbus: unknown setting(s) {unknown}; valid: {valid}")
    out = []
    for cls in classes:
        mine = {k: v for k, v in flags.items() if k in cls.model_fields}
        try:
            out.append(cls(**mine))
        except ValidationError as err:
            raise SystemExit(f"layerbus: bad settings for {cls.__name__}:\n{err}") from None
    return out


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return " (required)"
    default = field.get_default(call_default_factory=True)
    if default is None or default == "" or default == []:
        return ""
    return f" (default {default!r})"


def describe(classes: list[type[BaseModel]]) -> str:
    """One help line per setting: flag, environment variable, meaning, default."""
    lines = []
    seen: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "").upper()
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            dashed = name.replace("_", "-")
            flag = f"--[no-]{dashed}" if field.annotation is bool else f"--{dashed}"
            default = _default_text(field)
            lines.append(f"  {flag:32} {prefix}{name.upper()}: {field.description}{default}")
    return "\n".join(lines)


def _classes(command: str) -> list[type[BaseModel]]:
    from shared.engine_settings import EngineSettings
    from shared.settings import TransportSettings

    if command == "coordinator":
        from services.coordinator.settings import CoordinatorSettings

        return [CoordinatorSettings, EngineSettings, TransportSettings]
    if command == "stage":
        from services.stage.settings import StageSettings

        return [StageSettings, EngineSettings, TransportSettings]
    if command == "gateway":
        from services.gateway.settings import GatewaySettings

        return [GatewaySettings]  # includes the transport settings
    if command == "serve":
        from services.ops.launcher import ServeSettings

        return [ServeSettings, EngineSettings]
    if command in ("prepare-model", "keys", "health", "prometheus-targets"):
        return []
    raise SystemExit(f"layerbus: unknown command {command!r}\n\n{USAGE}")


def keys_command(argv: list[str]) -> None:
    """`layerbus keys generate DIR --name NAME`."""
    from shared.curve import KeyFileError, generate_keys

    usage = "usage: layerbus keys generate DIR --name NAME"
    if len(argv) < 2 or argv[0] != "generate" or argv[1].startswith("--"):
        raise SystemExit(usage)
    flags = parse_flags(argv[2:])
    if set(flags) != {"name"}:
        raise SystemExit(usage)
    try:
        public, secret = generate_keys(argv[1], flags["name"])
    except KeyFileError as err:
        raise SystemExit(f"layerbus: {err}") from None
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "keys":
        keys_command(rest)
        return
    if command == "plan":
        from services.ops.plan_command import main as plan_main

        sys.exit(plan_main(rest))
    if command == "probe":
        from services.ops.probe_command import main as probe_main

        sys.exit(probe_main(rest))
    if command == "prometheus-targets":
        from services.ops.prometheus_targets import main as targets_main

        sys.exit(targets_main(rest))
    classes = _classes(command)
    if command == "serve" and ("--help" in rest or "-h" in rest):
        print(serve_help())
        return
    if "--help" in rest or "-h" in rest:
        print(f"usage: layerbus {command} [--setting value ...]\n\nsettings:\n{describe(classes)}")
        return
    if command == "health":
        sys.exit(health(rest))
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {command} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if command == "serve":
        sys.exit(serve(rest))
    settings = build(classes, parse_flags(rest, boolean_fields(classes)))
    from shared.curve import InsecureBind, KeyFileError
    from shared.metrics_endpoint import MetricsPortError

    try:
        _run(command, settings)
    except (InsecureBind, KeyFileError, MetricsPortError) as err:
        raise SystemExit(f"layerbus {command}: {err}") from None


def _run(command: str, settings: list[Any]) -> None:
    if command == "coordinator":
        from services.coordinator.server import run as run_coordinator

        run_coordinator(*settings)
    elif command == "stage":
        from services.stage.server import run as run_stage

        run_stage(*settings)
    elif command == "gateway":
        from services.gateway.server import run as run_gateway
        from shared.curve import ServiceKeys

        # Fail before uvicorn starts, with the name of the setting to fix.
        ServiceKeys.load(settings[0].secret_key, settings[0].coordinator_key, True)
        run_gateway(*settings)
    elif command == "prepare-model":
        from shared.default_model import prepare_default_model

        print(prepare_default_model())


def serve_help() -> str:
    """--help of `layerbus serve`: its own settings, then what it forwards to each child."""
    from services.ops.launcher import ServeSettings
    from services.ops.serve_plan import CHILD_COMMANDS, LAUNCHER_OWNED

    lines = [
        "usage: layerbus serve [--setting value ...]",
        "",
        "settings of the launcher:",
        describe([ServeSettings]),
    ]
    shown = set(ServeSettings.model_fields)
    for command in CHILD_COMMANDS:
        classes = _classes(command)
        owned = LAUNCHER_OWNED[command] | shown
        forwarded = [name for cls in classes for name in cls.model_fields if name not in owned]
        if not forwarded:
            continue
        shown |= set(forwarded)
        lines += ["", f"forwarded to the {command} (and any other child that has them):"]
        lines.append(describe([_only(cls, forwarded) for cls in classes]))
    return "\n".join(lines)


def _only(cls: type[BaseModel], names: list[str]) -> type[BaseModel]:
    """A view of cls with just the named fields, for help text."""
    fields = {n: f for n, f in cls.model_fields.items() if n in names}
    return type(cls.__name__, (), {"model_fields": fields, "model_config": cls.model_config})


def serve(argv: list[str]) -> int:
    """`layerbus serve`: own settings plus every child setting, forwarded unchanged."""
    from services.ops.launcher import ServeSettings
    from services.ops.launcher import serve as run_serve
    from services.ops.serve_plan import CHILD_COMMANDS, ServeFlagError, route_flags
    from shared.engine_settings import EngineSettings

    children = {command: _classes(command) for command in CHILD_COMMANDS}
    own: list[type[BaseModel]] = [ServeSettings, EngineSettings]
    booleans = boolean_fields(own + [c for cs in children.values() for c in cs])
    try:
        routed = route_flags(parse_flags(argv, booleans), own, children)
    except ServeFlagError as err:
        raise SystemExit(f"layerbus: {err}") from None
    settings, engine = build(own, routed.own)
    metrics_capable = {
        command
        for command, classes in children.items()
        if any("metrics_port" in cls.model_fields for cls in classes)
    }
    return run_serve(settings, engine, routed.children, metrics_capable)


def health(argv: list[str]) -> int:
    """`layerbus health [TARGET [STAGE]]`; defaults: LAYERBUS_HEALTH_TARGET, LAYERBUS_HEALTH_STAGE.

    STAGE `self` is this container's stage (LAYERBUS_STAGE_NAME or stage-START-END).
    With neither, the target is found from the layerbus service running in this container.
    """
    import os

    from services.ops.health_probe import own_stage_name, probe, running_service

    target = argv[0] if argv else os.environ.get("LAYERBUS_HEALTH_TARGET", "")
    stage = argv[1] if len(argv) > 1 else os.environ.get("LAYERBUS_HEALTH_STAGE", "")
    if not target:
        target, stage = running_service(os.environ)
    if stage == "self":
        stage = own_stage_name(os.environ)
    problem = probe(target, stage)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    main()
