"""A placed stage moved to another layer range: replace this process with a fresh stage.

The same command line runs again, with the new range in LAYERBUS_STAGE_LAYERS and
LAYERBUS_STAGE_PLACED set, so the new process loads the range from its own model
folder, registers as a placed stage (the coordinator may move it again) and keeps
its name: the default name holds the process id, which exec keeps.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

PLACED_ENV = "LAYERBUS_STAGE_PLACED"


def reloaded() -> bool:
    """Whether this process is a placed stage reloaded for a new range (its --layers came
    from the coordinator, which may move it again)."""
    return os.environ.get(PLACED_ENV) == "1"


def reload_command(
    layers: str, argv: list[str], env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the reloaded stage (pure)."""
    if not argv:
        raise RuntimeError("cannot reload: this process's command line is unknown")
    return list(argv), {**env, "LAYERBUS_STAGE_LAYERS": layers, PLACED_ENV: "1"}


def reload_process(layers: str) -> NoReturn:
    """Exec this stage again for `layers`; the caller closed its sockets first."""
    argv, env = reload_command(layers, [sys.executable, *sys.orig_argv[1:]], dict(os.environ))
    logging.getLogger("layerbus.stage").warning("reloading for layers %s", layers)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
