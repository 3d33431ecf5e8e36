"""The Starlette application: routes, error handlers, and the lifespan that owns resources."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway import tokenize_api
from services.gateway.admission import AdmissionLimits
from services.gateway.admission_gate import AdmissionGate
from services.gateway.auth import authenticate
from services.gateway.coordinator_client import (
    CoordinatorClient,
    CoordinatorUnavailable,
)
from services.gateway.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    server_error_handler,
    unavailable,
)
from services.gateway.handlers import Gateway, gateway_of, handle_generation
from services.gateway.metrics import CONTENT_TYPE, GatewayMetrics, MetricsMiddleware
from services.gateway.openapi import openapi_document
from services.gateway.orjson_response import OrjsonResponse
from services.gateway.sampling_defaults import load_sampling_defaults
from services.gateway.settings import GatewaySettings
from services.gateway.tokenization import Tokenizer
from services.gateway.tools import load_tool_parser
from shared.metrics_endpoint import metrics_url


async def chat_completions(request: Request) -> Response:
    return await handle_generation(request, gateway_of(request), chat=True)


async def completions(request: Request) -> Response:
    return await handle_generation(request, gateway_of(request), chat=False)


async def models(request: Request) -> Response:
    gw = gateway_of(request)
    authenticate(request.headers, gw.settings.api_keys)
    status = gw.client.status
    card: dict[str, Any] = {
        "id": gw.settings.model_name,
        "object": "model",
        "created": request.app.state.started,
        "owned_by": "layerbus",
        "root": gw.settings.model,
    }
    if status is not None:
        card["max_model_len"] = status.max_model_len
    return OrjsonResponse({"object": "list", "data": [card]})


async def health(request: Request) -> Response:
    gw = gateway_of(request)
    status = gw.client.status
    if status is None:
        raise unavailable(
            f"no status from the coordinator at {gw.client.address} "
            f"within {gw.settings.coordinator_timeout_s:g}s",
            retry_after_s=gw.settings.retry_after_s,
            code="coordinator_unreachable",
        )
    if not status.ready:
        detail = f": {status.detail}" if status.detail else ""
        raise unavailable(
            f"the coordinator is not ready{detail}",
            retry_after_s=gw.settings.retry_after_s,
            code="coordinator_not_ready",
        )
    return OrjsonResponse({"status": "ok", "model": gw.settings.model_name})


async def status(request: Request) -> Response:
    gw = gateway_of(request)
    authenticate(request.headers, gw.settings.api_keys)
    try:
        st = await gw.client.query_status()
    except (TimeoutError, CoordinatorUnavailable):
        raise unavailable(
            f"the coordinator at {gw.client.address} did not answer within "
            f"{gw.settings.status_timeout_s:g}s (LAYERBUS_STATUS_TIMEOUT_S)",
            code="coordinator_unreachable",
        ) from None
    controller = gw.gate.controller
    return OrjsonResponse(
        {
            "model": gw.settings.model_name,
            "coordinator": {
                "address": gw.client.address,
                **{
                    key: value
                    for key, value in msgspec.structs.asdict(st).items()
                    if key not in ("nonce", "stages")
                },
            },
            "stages": [msgspec.structs.asdict(stage) for stage in st.stages],
            "gateway": {
                "running": controller.running,
                "queued": controller.queued,
                "metrics": metrics_url(
                    _served_port(request),
                    gw.settings.host,
                    override=gw.settings.metrics_advertise,
                ),
            },
        }
    )


def _served_port(request: Request) -> int:
    """The gateway's HTTP port: the setting, or the socket's when it was given one (port 0)."""
    server = request.scope.get("server") or (None, 0)
    return int(gateway_of(request).settings.port or server[1] or 0)


async def metrics(request: Request) -> Response:
    gw = gateway_of(request)
    if gw.settings.protect_metrics:
        authenticate(request.headers, gw.settings.api_keys)
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return OrjsonResponse(request.app.state.openapi)


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/status", status, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/tokenize", tokenize_api.tokenize, methods=["POST"]),
    Route("/detokenize", tokenize_api.detokenize, methods=["POST"]),
    Route("/version", tokenize_api.version, methods=["GET"]),
]


def create_app(settings: GatewaySettings, *, tokenizer: Tokenizer | None = None) -> Starlette:
    """The gateway app. Pass `tokenizer` to share one across apps (it is then not closed)."""
    gateway_metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tok = (
            tokenizer
            if tokenizer is not None
            else await asyncio.to_thread(
                Tokenizer, settings.model, settings.tokenizer_threads, settings.chat_template_text()
            )
        )
        client = CoordinatorClient(
            settings.coordinator,
            settings,
            status_interval_s=settings.status_interval_s,
            status_timeout_s=settings.status_timeout_s,
            coordinator_timeout_s=settings.coordinator_timeout_s,
            request_timeout_s=settings.request_timeout_s,
        )
        limits = AdmissionLimits(
            max_running=settings.max_running_requests,
            max_queued=settings.max_queued_requests,
            max_queued_tokens=settings.max_queued_prompt_tokens,
            max_per_key=settings.max_concurrency_per_key,
        )
        gate = AdmissionGate(limits, settings.retry_after_s)
        gateway_metrics.in_flight.set_function(lambda: gate.controller.running)
        gateway_metrics.queued.set_function(lambda: gate.controller.queued)
        gateway_metrics.coordinator_ready.set_function(
            lambda: 1.0 if client.ready_status() is not None else 0.0
        )
        await client.start()
        defaults = await asyncio.to_thread(
            load_sampling_defaults, settings.model, settings.generation_config
        )
        parser = None
        if settings.tool_call_parser:
            parser = await asyncio.to_thread(load_tool_parser, settings.tool_call_parser)
        app.state.gateway = Gateway(settings, tok, client, gate, gateway_metrics, defaults, parser)
        app.state.started = int(time.time())
        app.state.openapi = openapi_document()
        try:
            yield
        finally:
            await client.close()
            if tokenizer is None:
                tok.close()

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[
            Middleware(
                MetricsMiddleware,
                metrics=gateway_metrics,
                routes=frozenset(r.path for r in ROUTES),
            )
        ],
        exception_handlers={
            APIError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: server_error_handler,
        },
    )
