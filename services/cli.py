"""The `layerbus` command: coordinator, stage, gateway and serve (all on one host)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pydantic import BaseModel, ValidationError

USAGE = """usage: layerbus COMMAND [--setting value ...]

commands:
  serve        gateway + coordinator + stages on this host (what `make serve` runs)
  coordinator  the scheduler; stages and gateways connect to it
  stage        one layer slice, e.g. layerbus stage --layers 0:15 --coordinator tcp://HOST:5555
  gateway      the OpenAI-compatible HTTP API
  prepare-model  convert the bundled default model once and print its folder

Every setting is also read from its LAYERBUS_* environment variable.
`layerbus COMMAND --help` lists the settings of a command.
"""


def parse_flags(argv: list[str]) -> dict[str, str]:
    """--name value / --name=value pairs, dashes in names become underscores.

    A bare --name (last, or followed by another --flag) means "true", as in `vllm serve`.
    """
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise SystemExit(
                f"layerbus: unexpected argument {arg!r}; settings look like --name value"
            )
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                value = "true"
            else:
                value = argv[i + 1]
                i += 1
        flags[name.replace("-", "_")] = value
        i += 1
    return flags


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


def describe(classes: list[type[BaseModel]]) -> str:
    lines = []
    for cls in classes:
        for name, field in cls.model_fields.items():
            prefix = str(cls.model_config.get("env_prefix") or "").upper()
            default = "" if field.is_required() else f" (default {field.default!r})"
            flag = "--" + name.replace("_", "-")
            lines.append(f"  {flag:30} {prefix}{name.upper()}: {field.description}{default}")
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
        from services.launcher import ServeSettings

        return [ServeSettings, EngineSettings]
    if command == "prepare-model":
        return []
    raise SystemExit(f"layerbus: unknown command {command!r}\n\n{USAGE}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    classes = _classes(command)
    if "--help" in rest or "-h" in rest:
        print(f"usage: layerbus {command} [--setting value ...]\n\nsettings:\n{describe(classes)}")
        return
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {command} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    settings = build(classes, parse_flags(rest))
    if command == "coordinator":
        from services.coordinator.server import run as run_coordinator

        run_coordinator(*settings)
    elif command == "stage":
        from services.stage.server import run as run_stage

        run_stage(*settings)
    elif command == "gateway":
        from services.gateway.server import run as run_gateway

        run_gateway(*settings)
    elif command == "serve":
        from services.launcher import serve

        sys.exit(serve(*settings))
    elif command == "prepare-model":
        from shared.default_model import prepare_default_model

        print(prepare_default_model())


if __name__ == "__main__":
    main()
