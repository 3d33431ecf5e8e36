"""`layerbus` sub-commands as settings classes, parsed and run by pydantic-settings' CliApp.

A command's flags are the fields of the settings classes it is made of (its `parts`),
kebab-cased (`--max-model-len`); each field is also read from the environment variable of
the part that declares it (LAYERBUS_STAGE_LAYERS, LAYERBUS_MAX_MODEL_LEN, ...), exactly as
that part alone reads it. `--help` groups the flags by part and names each one's variable.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliApp,
    CliSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
)

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})

P = TypeVar("P", bound=BaseSettings)


class CliUsageError(SystemExit):
    """A flag or value a command refuses: exit status 2, as argparse's; str() is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def refuse(message: str) -> CliUsageError:
    """Print why a command line is refused and return the error to raise (exit status 2)."""
    print(message, file=sys.stderr)
    return CliUsageError(message)


class CommandSettings(BaseSettings):
    """Base of a `layerbus` sub-command: its parts' fields, each read from its part's env."""

    # The settings classes whose fields this command takes (it subclasses each of them).
    # A command without parts reads its own fields under its env_prefix, or none without one.
    parts: ClassVar[tuple[type[BaseSettings], ...]] = ()
    # Help group and environment variable of fields no part declares (`layerbus serve`).
    extra_help: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # One environment source per part keeps each part's prefix: LAYERBUS_STAGE_ for
        # the stage's own settings, LAYERBUS_ for the engine's, in the same process.
        if cls.parts:
            return (init_settings, *(EnvSettingsSource(part) for part in cls.parts))
        if cls.model_config.get("env_prefix"):
            return (init_settings, env_settings)
        return (init_settings,)

    def part(self, cls: type[P]) -> P:
        """This command's values of one part, as that part's settings object."""
        names = set(cls.model_fields)
        values = {name: getattr(self, name) for name in names}
        return cls.model_construct(_fields_set=self.model_fields_set & names, **values)

    @classmethod
    def field_help(cls, name: str) -> tuple[str, str]:
        """The help group and the environment variable of one field ("" when none)."""
        if name in cls.extra_help:
            return cls.extra_help[name]
        for part in cls.parts:
            if name in part.model_fields:
                return group_title(declaring_class(part, name)), env_name(part, name)
        if cls.model_config.get("env_prefix"):
            return "", env_name(cls, name)
        return "", ""

    @classmethod
    def prepare_argv(cls, argv: list[str]) -> list[str]:
        """The command's arguments as pydantic-settings should read them (see truth_words)."""
        booleans = {name.replace("_", "-") for name, f in cls.model_fields.items() if is_boolean(f)}
        return truth_words(argv, booleans)


def group_title(cls: type[BaseSettings]) -> str:
    """A part's help group: the first line of its docstring."""
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")


def declaring_class(cls: type[BaseSettings], name: str) -> type[BaseSettings]:
    """The class among cls and its bases that declares field `name` (TransportSettings for
    the gateway's socket options), so that help groups them as declared."""
    for base in cls.__mro__:
        if name in getattr(base, "__annotations__", {}) and issubclass(base, BaseSettings):
            return base
    return cls


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable a settings class reads `name` from."""
    return f"{cls.model_config.get('env_prefix') or ''}{name}".upper()


def is_boolean(field: FieldInfo) -> bool:
    """bool or bool | None: the fields that are flags (`--x`, `--no-x`)."""
    if field.annotation is bool:
        return True
    args = set(get_args(field.annotation))
    return get_origin(field.annotation) in (Union, type(int | None)) and args == {bool, type(None)}


def truth_words(argv: list[str], booleans: set[str]) -> list[str]:
    """Rewrite `--x=false` and `--x false` as `--no-x` (and the true words as `--x`).

    pydantic-settings' implicit flags take `--x` and `--no-x` only; layerbus has always
    taken a truth word too (the serve launcher forwards `--x=value`, scripts pass
    `--enable-prefix-caching=false`). A word that is neither is left for argparse to refuse.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, word = arg.partition("=")
        if name.startswith("--") and name[2:] in booleans:
            if not eq and i + 1 < len(argv) and argv[i + 1].lower() in TRUE_WORDS | FALSE_WORDS:
                word, eq = argv[i + 1], "="
                i += 1
            if eq and word.lower() in TRUE_WORDS:
                arg = name
            elif eq and word.lower() in FALSE_WORDS:
                arg = f"--no-{name[2:]}"
        out.append(arg)
        i += 1
    return out


def subcommands(cls: type[BaseModel]) -> dict[str, type[CommandSettings]]:
    """The sub-command classes of a root command, by field name."""
    found = {}
    for name, field in cls.model_fields.items():
        for arg in get_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, CommandSettings):
                found[name] = arg
    return found


def field_name(command: type[BaseModel], key: str) -> str:
    """The field a flag or error location names (by name or alias); "" for none."""
    if key in command.model_fields:
        return key
    return next((n for n, f in command.model_fields.items() if f.alias == key), "")


def _resolve(
    root: type[CommandSettings], path: list[str]
) -> tuple[type[CommandSettings], list[str]]:
    """The command a dotted argument or error location belongs to, and the rest of the path."""
    command = root
    while path and path[0] in subcommands(command):
        command = subcommands(command)[path[0]]
        path = path[1:]
    return command, path


class _Arguments:
    """Adds each flag under its part's help group, with its environment variable; main thread."""

    def __init__(self, root: type[CommandSettings]) -> None:
        self.root = root
        self.groups: dict[int, dict[str, Any]] = {}

    def __call__(self, parser: Any, *names: str, **kwargs: Any) -> Any:
        positional = names[0] if names and not names[0].startswith("-") else ""
        command, rest = _resolve(self.root, str(kwargs.get("dest", positional)).split("."))
        name = field_name(command, rest[0]) if len(rest) == 1 else ""
        if not name or "help" not in kwargs:
            return parser.add_argument(*names, **kwargs)  # -h/--help
        field = command.model_fields[name]
        extra = field.json_schema_extra
        if isinstance(extra, dict) and "metavar" in extra and not positional:
            kwargs["metavar"] = extra["metavar"]
        title, env = command.field_help(name)
        kwargs["help"] = _tidy_help(kwargs["help"], field) + (f" [env: {env}]" if env else "")
        if not title or positional or not hasattr(parser, "add_argument_group"):
            return parser.add_argument(*names, **kwargs)
        groups = self.groups.setdefault(id(parser), {})
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title].add_argument(*names, **kwargs)


def _tidy_help(text: str, field: FieldInfo) -> str:
    """pydantic-settings' help, without empty defaults and with a default factory's value."""
    for empty in (" (default: )", " (default: null)", " (default: [])"):
        text = text.replace(empty, "")
    if field.default_factory is not None and "(default factory:" in text:
        value = str(field.get_default(call_default_factory=True)).replace("%", "%%")
        head = text[: text.index("(default factory:")].rstrip()
        text = f"{head} (default: {value})" if value not in ("", "[]") else head
    return text


def run_cli(root: type[CommandSettings], argv: list[str], prog: str) -> None:
    """Parse argv into `root` and run the chosen sub-command's cli_cmd.

    A flag or value a command refuses raises CliUsageError naming the flag, its
    environment variable and the problem, also printed to stderr; --help exits 0.
    """
    command, _ = _resolve(root, [arg.replace("-", "_") for arg in argv[:1]])
    if command is not root:
        argv = argv[:1] + command.prepare_argv(argv[1:])
        prog = f"{prog} {argv[0]}"
    source: CliSettingsSource[Any] = CliSettingsSource(
        root,
        cli_prog_name=prog.split()[0],
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_exit_on_error=False,
        add_argument_method=_Arguments(root),
    )
    try:
        CliApp.run(root, cli_args=argv, cli_settings_source=source)
        return
    except SettingsError as err:
        message = _parse_error(str(err).removeprefix("error parsing CLI: "))
    except ValidationError as err:
        if err.title != root.__name__:
            raise  # not the command line's values: a failure while the command ran
        message = validation_text(root, err)
    raise refuse(f"{prog}: {message}\n  (usage: `{prog} --help`)")


def _parse_error(message: str) -> str:
    """argparse's complaint (the first line; the rest repeats --help), unknown flags as settings."""
    message = message.splitlines()[0] if message else message
    prefix = "unrecognized arguments: "
    if message.startswith(prefix):
        given = message.removeprefix(prefix)
        names = [a[2:].partition("=")[0].replace("-", "_") for a in given.split() if a[:2] == "--"]
        message = (
            f"unknown setting(s) {names} in `{given}`"
            if names
            else f"unexpected argument(s) `{given}`; settings look like --name value"
        )
    return message


def validation_text(root: type[CommandSettings], err: ValidationError) -> str:
    """One line per refused value: the flag, its environment variable and why."""
    lines = []
    for error in err.errors(include_url=False):
        reason = error["msg"].removeprefix("Value error, ")
        command, loc = _resolve(root, [str(part) for part in error["loc"]])
        if not loc:  # a check across settings: its message names them
            lines.append(reason)
            continue
        _, env = command.field_help(field_name(command, loc[0]))
        where = "--" + ".".join(loc).replace("_", "-") + (f" ({env})" if env else "")
        hidden = command.model_config.get("hide_input_in_errors") or "input" not in error
        lines.append(f"{where}: {reason}" + ("" if hidden else f" (got {error['input']!r})"))
    return "\n  ".join(lines)
