"""The OpenAPI document served at /openapi.json; request schemas come from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.gateway.protocol import ChatCompletionRequest, CompletionRequest

_REF = "#/components/schemas/{model}"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}}
    return {str(s): {"description": "error", **ref} for s in statuses}


def _generation(summary: str, model: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
            },
            "responses": {
                "200": {
                    "description": "a completion (JSON), or a stream of chunks when stream=true",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 401, 404, 413, 429, 503),
            },
        }
    }


def _get(summary: str, media: str = "application/json", auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "ok", "content": {media: {"schema": {}}}},
            **_errors(*([401, 503] if auth else [503])),
        },
    }
    if auth:
        op["security"] = [{"bearer": []}]
    return {"get": op}


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "layerbus gateway", "version": version},
        "paths": {
            "/v1/chat/completions": _generation("Chat completion", "ChatCompletionRequest"),
            "/v1/completions": _generation("Text completion", "CompletionRequest"),
            "/v1/models": _get("The served model"),
            "/health": _get("200 when the coordinator is ready, else 503", auth=False),
            "/status": _get("Model, stages, layer ranges and their state"),
            "/metrics": _get("Prometheus metrics", media="text/plain", auth=False),
            "/openapi.json": _get("This document", auth=False),
        },
        "components": {
            "schemas": _schemas(ChatCompletionRequest, CompletionRequest),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
