"""GET /openapi.json describes every endpoint and the request schemas."""

from __future__ import annotations

import re

import httpx


def test_openapi_document(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/health",
        "/status",
        "/metrics",
        "/openapi.json",
    }
    schemas = doc["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert "messages" in chat["required"]
    assert chat["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    assert "prompt" in schemas["CompletionRequest"]["required"]
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ChatCompletionRequest"
    # Every $ref points at a schema that exists.
    text = http.get("/openapi.json").text
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in schemas
