"""What the coordinator checks before it binds a socket: settings that would only fail later.

The engine is built only once stages have joined, which may be minutes after start-up;
a setting the engine would refuse is refused here, at once, naming the setting.
"""

from __future__ import annotations

from shared.engine_settings import EngineSettings, check_load_format


def startup_error(engine: EngineSettings) -> str | None:
    """Why the coordinator must not start with these engine settings; None when it may."""
    try:
        check_load_format(engine.load_format)
    except ValueError as err:
        return str(err)
    return None
