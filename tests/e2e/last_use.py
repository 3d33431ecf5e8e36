"""Stop a session-wide stack after the last test that uses it, not at the session's end."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

# Fixture name -> how to stop what it started (set by the fixture once it has started).
STOPS: dict[str, Callable[[], None]] = {}
# Fixture name -> node id of the last collected test that uses it (set at collection).
LAST_USER: dict[str, str] = {}


def plan(items: list[pytest.Item], names: Iterable[str]) -> None:
    """Note, for each fixture in `names`, the last of `items` that uses it (directly or not)."""
    wanted = set(names)
    LAST_USER.clear()
    for item in items:
        for name in wanted.intersection(getattr(item, "fixturenames", ())):
            LAST_USER[name] = item.nodeid


def finished(item: pytest.Item) -> None:
    """After `item`: stop every registered stack whose last user it was."""
    for name, nodeid in LAST_USER.items():
        if nodeid == item.nodeid and name in STOPS:
            STOPS.pop(name)()
