"""The coordinator's message table: every message a peer may send has its handler."""

from __future__ import annotations

import inspect

from services.coordinator.authorization import GATEWAY_MESSAGES, STAGE_MESSAGES
from services.coordinator.server import HANDLERS, CoordinatorServer


def test_every_message_a_peer_may_send_has_a_handler() -> None:
    assert set(HANDLERS) == set(GATEWAY_MESSAGES + STAGE_MESSAGES)


def test_each_handler_takes_identity_message_sender_and_time() -> None:
    for kind, name in HANDLERS.items():
        method = getattr(CoordinatorServer, name)
        params = list(inspect.signature(method).parameters)
        assert params == ["self", "identity", "msg", "who", "now"], f"{kind.__name__}: {name}"
