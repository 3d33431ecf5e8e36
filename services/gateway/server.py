"""Entry point: build the app and serve it with uvicorn."""

from __future__ import annotations

import logging
import socket

import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def make_server(settings: GatewaySettings) -> uvicorn.Server:
    """A configured, not yet started uvicorn server for the gateway."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def run(settings: GatewaySettings, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM. `sock`: an already bound socket (e.g. port 0 in tests)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = make_server(settings)
    server.run(sockets=[sock] if sock is not None else None)
