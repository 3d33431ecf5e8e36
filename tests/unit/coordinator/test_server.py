"""The coordinator's message table: every message a peer may send has its handler."""

from __future__ import annotations

import inspect

from services.coordinator.authorization import GATEWAY_MESSAGES, STAGE_MESSAGES
from services.coordinator.membership import Membership
from services.coordinator.placing import Placing
from services.coordinator.server import HANDLERS, CoordinatorServer

# The server's attributes a handler path may go through, and their classes.
OWNERS: dict[str, type] = {"membership": Membership, "placing": Placing}


def handler_of(path: str) -> object:
    owner, _, name = path.rpartition(".")
    return getattr(OWNERS[owner] if owner else CoordinatorServer, name)


def test_every_message_a_peer_may_send_has_a_handler() -> None:
    assert set(HANDLERS) == set(GATEWAY_MESSAGES + STAGE_MESSAGES)


def test_each_handler_takes_identity_message_sender_and_time() -> None:
    for kind, path in HANDLERS.items():
        method = handler_of(path)
        assert callable(method), f"{kind.__name__}: {path} is not a method"
        params = list(inspect.signature(method).parameters)
        assert params == ["self", "identity", "msg", "who", "now"], f"{kind.__name__}: {path}"

