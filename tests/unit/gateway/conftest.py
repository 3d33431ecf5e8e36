"""Fixtures: the real tokenizer, a fake coordinator, and the gateway served by uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.tokenization import Tokenizer
from tests.unit.gateway.fake_coordinator import FakeCoordinator

MODEL_PATH = Path.home() / ".cache" / "layerbus" / "SmolLM2-135M-Instruct"
MODEL_NAME = MODEL_PATH.name
# Canned reply: ASCII, an emoji and CJK, so byte-level tokens split characters.
REPLY_TEXT = "Hello there! 😀 你好, world. STOP here and more text after."


@pytest.fixture(scope="session")
def tokenizer() -> Iterator[Tokenizer]:
    if not MODEL_PATH.is_dir():
        pytest.skip(f"model folder {MODEL_PATH} missing (prepare the default model first)")
    tok = Tokenizer(str(MODEL_PATH), threads=2)
    yield tok
    tok.close()


@pytest.fixture(scope="session")
def reply_tokens(tokenizer: Tokenizer) -> list[int]:
    return list(tokenizer._hf.encode(REPLY_TEXT, add_special_tokens=False))


@pytest.fixture
def fake(reply_tokens: list[int]) -> Iterator[FakeCoordinator]:
    coordinator = FakeCoordinator(reply_tokens=reply_tokens).start()
    yield coordinator
    coordinator.stop()


@dataclass
class RunningGateway:
    """A gateway served by uvicorn on a free port in a background thread."""

    url: str
    settings: GatewaySettings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self.client() as http:
            while time.monotonic() < deadline:
                if http.get("/health").status_code == 200:
                    return
                time.sleep(0.02)
        raise AssertionError("gateway never became ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def gateway_settings(coordinator: str, **overrides: Any) -> GatewaySettings:
    """Settings for tests: fast status polling and short timeouts."""
    values: dict[str, Any] = {
        "model": str(MODEL_PATH),
        "coordinator": coordinator,
        "port": 0,
        "status_interval_s": 0.05,
        "status_timeout_s": 0.5,
        "coordinator_timeout_s": 1.0,
        "request_timeout_s": 10.0,
        "linger_ms": 0,
        "log_level": "warning",
    }
    values.update(overrides)
    return GatewaySettings(**values)


def launch_gateway(
    tokenizer: Tokenizer, coordinator: str, wait_ready: bool = True, **overrides: Any
) -> RunningGateway:
    """Serve a gateway with uvicorn on a free port in a background thread."""
    settings = gateway_settings(coordinator, **overrides)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, tokenizer=tokenizer), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True
    )
    thread.start()
    gw = RunningGateway(f"http://127.0.0.1:{port}", settings, server, thread)
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            gw.stop()
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    if wait_ready:
        gw.wait_ready()
    return gw


@pytest.fixture
def start_gateway(
    tokenizer: Tokenizer, fake: FakeCoordinator
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways connected to `fake` (keyword overrides go to GatewaySettings)."""
    running: list[RunningGateway] = []

    def start(wait_ready: bool = True, **overrides: Any) -> RunningGateway:
        coordinator = overrides.pop("coordinator", fake.address)
        gw = launch_gateway(tokenizer, coordinator, wait_ready, **overrides)
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    """A ready gateway with default settings."""
    return start_gateway()


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


class RawRequest:
    """An HTTP request over a plain socket, so a test can hang up whenever it likes."""

    def __init__(
        self, url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ):
        host, port = url.removeprefix("http://").split(":")
        payload = orjson.dumps(body)
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)

    def read_until(self, marker: bytes) -> bytes:
        """Everything received until `marker` shows up (or the server closes)."""
        data = b""
        while marker not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def read_all(self) -> bytes:
        """Everything until the server closes or the response is complete (small bodies)."""
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if not chunk or (length and len(body) >= length[0]):
                return data

    def close(self) -> None:
        """Hang up."""
        self.sock.close()
