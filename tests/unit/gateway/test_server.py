"""run(settings): serves the app with uvicorn until asked to stop."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from services.gateway import server as server_module
from tests.unit.gateway.conftest import gateway_settings
from tests.unit.gateway.fake_coordinator import FakeCoordinator


def test_run_serves_until_should_exit(
    fake: FakeCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[uvicorn.Server] = []
    original = server_module.make_server

    def capture(settings: object) -> uvicorn.Server:
        made.append(original(settings))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(server_module, "make_server", capture)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = gateway_settings(fake.address, port=port)
    thread = threading.Thread(target=server_module.run, args=(settings, sock), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # the tokenizer loads at start-up
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.05)
        assert status == 200
    finally:
        assert made
        made[0].should_exit = True
        thread.join(15)
    assert not thread.is_alive()
