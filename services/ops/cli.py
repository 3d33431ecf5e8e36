"""The `layerbus` command: one pydantic-settings CliApp, one sub-command per service or tool."""

from __future__ import annotations

import logging
import os
import sys

from pydantic import Field
from pydantic_settings import CliApp, CliPositionalArg, CliSubCommand, SettingsConfigDict

from services.ops.command_settings import CommandSettings, run_cli
from services.ops.plan_command import PlanCommand
from services.ops.probe_command import ProbeCommand
from services.ops.serve_command import ServeCommand
from services.ops.service_commands import CoordinatorCommand, GatewayCommand, StageCommand

DESCRIPTION = """Serve one LLM split by layers across hosts.

Every setting is also read from its LAYERBUS_* environment variable (named in brackets
in a command's help). `layerbus COMMAND --help` lists the settings of a command.
"""

# Commands that log as services do; the others print their result.
LOGGED = frozenset({"serve", "coordinator", "stage", "gateway", "prepare-model"})


class PrepareModelCommand(CommandSettings):
    """`layerbus prepare-model`: convert the bundled default model once and print its folder."""

    def cli_cmd(self) -> None:
        from shared.default_model import prepare_default_model

        print(prepare_default_model())


class KeysGenerateCommand(CommandSettings):
    """`layerbus keys generate`: write DIR/NAME.key (public) and DIR/NAME.key_secret."""

    dir: CliPositionalArg[str] = Field(description="folder for the two key files")
    name: str = Field(description="the key's name, e.g. gateway-a or stage-0")

    def cli_cmd(self) -> None:
        from shared.curve import KeyFileError, generate_keys

        try:
            public, secret = generate_keys(self.dir, self.name)
        except KeyFileError as err:
            raise SystemExit(f"layerbus keys: {err}") from None
        print(f"public key: {public}\nsecret key: {secret} (keep it private)")


class KeysCommand(CommandSettings):
    """`layerbus keys`: CURVE key pairs for encrypted, authenticated sockets."""

    generate: CliSubCommand[KeysGenerateCommand] = Field(
        description="write DIR/NAME.key (public) and DIR/NAME.key_secret (keep it private)"
    )

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


class HealthCommand(CommandSettings):
    """`layerbus health`: the container health check; exit status 0 when healthy."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_HEALTH_")

    target: CliPositionalArg[str] = Field(
        "",
        description="gateway URL or tcp://COORDINATOR (default: the layerbus service running "
        "in this container)",
    )
    stage: CliPositionalArg[str] = Field(
        "",
        description="a stage that must be serving; self = this container's stage "
        "(LAYERBUS_STAGE_NAME or stage-START-END)",
    )

    def cli_cmd(self) -> None:
        from services.ops.health_probe import own_stage_name, probe, running_service

        target, stage = self.target, self.stage
        if not target:
            target, stage = running_service(os.environ)
        if stage == "self":
            stage = own_stage_name(os.environ)
        problem = probe(target, stage)
        if problem:
            print(f"unhealthy: {problem}", file=sys.stderr)
            sys.exit(1)
        print("healthy")
        sys.exit(0)


class PrometheusTargetsCommand(CommandSettings):
    """`layerbus prometheus-targets`: every service's metrics address, for Prometheus."""

    gateway: CliPositionalArg[str] = Field(
        description="the gateway's URL; its /status lists the services (sends LAYERBUS_API_KEY "
        "when set)"
    )
    output: CliPositionalArg[str] = Field(
        "", description="file-based discovery JSON file, replaced atomically (default: stdout)"
    )

    def cli_cmd(self) -> None:
        from services.ops.prometheus_targets import write_targets

        sys.exit(write_targets(self.gateway, self.output, os.environ.get("LAYERBUS_API_KEY", "")))


class LayerbusCommand(CommandSettings):
    """`layerbus`: the root command; it runs the sub-command named first."""

    model_config = SettingsConfigDict(json_schema_extra={"description": DESCRIPTION})

    serve: CliSubCommand[ServeCommand] = Field(
        description="gateway + coordinator + stages on this host (what `make serve` runs)"
    )
    coordinator: CliSubCommand[CoordinatorCommand] = Field(
        description="the scheduler; stages and gateways connect to it"
    )
    stage: CliSubCommand[StageCommand] = Field(
        description="one layer slice, e.g. layerbus stage --layers 0:15 --coordinator "
        "tcp://HOST:5555"
    )
    gateway: CliSubCommand[GatewayCommand] = Field(description="the OpenAI-compatible HTTP API")
    prepare_model: CliSubCommand[PrepareModelCommand] = Field(
        description="convert the bundled default model once and print its folder"
    )
    keys: CliSubCommand[KeysCommand] = Field(
        description="keys generate DIR --name NAME: write DIR/NAME.key (public) and "
        "DIR/NAME.key_secret"
    )
    health: CliSubCommand[HealthCommand] = Field(
        description="container health check: layerbus health URL|tcp://COORDINATOR [STAGE]"
    )
    plan: CliSubCommand[PlanCommand] = Field(
        description="the layer split placement would choose for given stage capacities; "
        "starts nothing"
    )
    probe: CliSubCommand[ProbeCommand] = Field(
        description="this host's memory and measured layer speed, as JSON for `layerbus plan`"
    )
    prometheus_targets: CliSubCommand[PrometheusTargetsCommand] = Field(
        description="every service's metrics address, as Prometheus file-based discovery JSON "
        "(from the gateway's /status)"
    )

    def cli_cmd(self) -> None:
        CliApp.run_subcommand(self)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "help":
        argv = ["--help"]
    if argv[0] in LOGGED:
        logging.basicConfig(
            level=logging.INFO,
            format=f"%(asctime)s {argv[0]} %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
    run_cli(LayerbusCommand, argv, "layerbus")


if __name__ == "__main__":
    main()
