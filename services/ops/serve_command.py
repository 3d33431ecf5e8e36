"""`layerbus serve` as a command: the launcher's and the engine's settings, and each child's.

Every setting a child process has (and the launcher does not set itself, see
serve_plan.LAUNCHER_OWNED) is a flag of `layerbus serve` too, forwarded to that child as
given; the child's own settings class checks it before anything starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from pydantic import Field, create_model
from pydantic_settings import BaseSettings

from services.ops.command_settings import CommandSettings, env_name, is_boolean, refuse
from services.ops.launcher import ServeSettings
from services.ops.serve_plan import CHILD_COMMANDS, LAUNCHER_OWNED, ServeFlagError, route_flags
from services.ops.service_commands import CoordinatorCommand, GatewayCommand, StageCommand
from shared.engine_settings import EngineSettings

# The settings classes of each child command: those its `layerbus COMMAND` is made of.
CHILD_SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "coordinator": CoordinatorCommand.parts,
    "stage": StageCommand.parts,
    "gateway": GatewayCommand.parts,
}
OWN_SETTINGS: tuple[type[BaseSettings], ...] = (ServeSettings, EngineSettings)


def _flag_text(value: object) -> str:
    """A value as a child's command line takes it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _type_name(annotation: Any) -> str:
    """int for `int | None`, str for `list[str]`: what a forwarded flag's value reads as."""
    named = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
    return getattr(named[0], "__name__", "str") if named else "str"


class ServeCommandBase(CommandSettings, EngineSettings, ServeSettings):
    """`layerbus serve`: gateway + coordinator + stages as supervised processes on this host."""

    parts = OWN_SETTINGS

    def cli_cmd(self) -> None:
        """Start and supervise the children; exits with the launcher's status."""
        from services.ops.launcher import serve

        # Set on the command line or in this process's environment: the children read the
        # same environment, so forwarding what came from it changes nothing for them.
        flags = {name: _flag_text(getattr(self, name)) for name in sorted(self.model_fields_set)}
        try:
            routed = route_flags(flags, OWN_SETTINGS, CHILD_SETTINGS)
        except ServeFlagError as err:
            raise refuse(f"layerbus serve: {err}") from None
        metrics_capable = {
            command
            for command, classes in CHILD_SETTINGS.items()
            if any("metrics_port" in cls.model_fields for cls in classes)
        }
        code = serve(
            self.part(ServeSettings), self.part(EngineSettings), routed.children, metrics_capable
        )
        if code:
            raise SystemExit(code)


def _forwarded() -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The fields only children have: (type, Field) each, and their help group and variable."""
    own = {name for cls in OWN_SETTINGS for name in cls.model_fields}
    fields: dict[str, Any] = {}
    help_of: dict[str, tuple[str, str]] = {}
    for command in CHILD_COMMANDS:
        title = f"forwarded to the {command} (and any other child that has them)"
        for cls in CHILD_SETTINGS[command]:
            for name, field in cls.model_fields.items():
                if name in own or name in fields or name in LAUNCHER_OWNED[command]:
                    continue
                # Taken as text (a flag stays a flag) and checked by the child's own class
                # (route_flags), so the child receives exactly what was given; the default
                # is the child's, shown in --help, and not checked as text.
                kind = field.annotation if is_boolean(field) else str
                extra: dict[str, Any] = {"metavar": _type_name(field.annotation)}
                if field.default_factory is not None:
                    info = Field(
                        default_factory=field.default_factory,
                        description=field.description,
                        validate_default=False,
                        json_schema_extra=extra,
                    )
                else:
                    info = Field(
                        field.default,
                        description=field.description,
                        validate_default=False,
                        json_schema_extra=extra,
                    )
                fields[name] = (kind, info)
                help_of[name] = (title, env_name(cls, name))
    return fields, help_of


def _serve_command() -> type[ServeCommandBase]:
    fields, help_of = _forwarded()
    command = create_model(
        "ServeCommand", __base__=ServeCommandBase, __doc__=ServeCommandBase.__doc__, **fields
    )
    command.extra_help = help_of
    return command


if TYPE_CHECKING:
    ServeCommand = ServeCommandBase
else:
    ServeCommand = _serve_command()
