"""The life of a generation request: auth, body, validation, admission, tokens, answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from services.gateway import shapes
from services.gateway.admission_gate import AdmissionGate, estimate_tokens
from services.gateway.auth import authenticate
from services.gateway.coordinator_client import CoordinatorClient
from services.gateway.disconnect import ClientGone, run_until_disconnect
from services.gateway.errors import APIError, bad_request, generation_failed, unavailable
from services.gateway.generation import Generation, PromptPlan, new_request_id
from services.gateway.metrics import GatewayMetrics, RequestTimer
from services.gateway.orjson_response import OrjsonResponse
from services.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelRequest,
    parse_request,
    require_model,
)
from services.gateway.sampling_defaults import NEUTRAL, pick
from services.gateway.settings import GatewaySettings
from services.gateway.streaming import SSEResponse, StreamPlan, sse_events
from services.gateway.structured import structured_spec
from services.gateway.tokenization import TemplateError, Tokenizer
from services.gateway.tools import ToolExtractor, ToolPlan, plan_tools, tool_constraint
from services.gateway.wire_fields import wire_param
from shared import wire
from shared.context_length import context_length_error

Posted = TypeVar("Posted", bound=ModelRequest)

# Not an HTTP status a client sees (it has left); nginx's code for the metrics label.
CLIENT_CLOSED = 499


@dataclass
class Gateway:
    """What handlers share: created by the app's lifespan, used on the event loop only."""

    settings: GatewaySettings
    tokenizer: Tokenizer
    client: CoordinatorClient
    gate: AdmissionGate
    metrics: GatewayMetrics
    # Sampling defaults from the model's generation_config (sampling_defaults.py).
    defaults: dict[str, Any] = field(default_factory=dict)
    # vLLM's tool parser class (--tool-call-parser), or None.
    tool_parser: Any = None


def gateway_of(request: Request) -> Gateway:
    """The Gateway the app's lifespan made."""
    gw: Gateway = request.app.state.gateway
    return gw


async def read_request(
    request: Request, gw: Gateway, model: type[Posted]
) -> tuple[str | None, bytes, Posted]:
    """Authenticate, read, parse and check the model of a POST: the API key, the body, parsed."""
    settings = gw.settings
    key = authenticate(request.headers, settings.api_keys)
    body = await read_body(request, settings.max_body_bytes)
    req = parse_request(body, model)
    require_model(req.model, settings.model_name, aliases=(settings.model,))
    return key, body, req


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it exceeds `limit` bytes."""
    too_large = APIError(
        413,
        f"request body exceeds {limit} bytes (LAYERBUS_MAX_BODY_BYTES)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


_WIRE_FIELDS = set(wire.SamplingSpec.__struct_fields__)


def sampling_spec(
    req: ChatCompletionRequest | CompletionRequest,
    max_tokens: int,
    defaults: dict[str, Any] | None = None,
    tool_plan: ToolPlan | None = None,
) -> wire.SamplingSpec:
    """The coordinator's view of the request's sampling parameters.

    The request's fields that wire.SamplingSpec declares pass by name; those the client
    left out take the model's generation_config values (`defaults`), then the wire's.
    """
    fields = req.model_dump(include=_WIRE_FIELDS, exclude_none=True)
    for name in NEUTRAL:
        fields[name] = pick(name, fields.get(name), defaults or {})
    top_k = int(fields["top_k"])
    fields["top_k"] = 0 if top_k == -1 else top_k
    min_tokens = fields.get("min_tokens", 0)
    if min_tokens > max_tokens:
        raise bad_request(
            f"min_tokens ({min_tokens}) exceeds max_tokens ({max_tokens})", "min_tokens"
        )
    fields["max_tokens"] = max_tokens
    fields["logprobs"] = req.num_top_logprobs()
    fields["structured"] = tool_constraint(tool_plan) or structured_spec(
        req.response_format, req.structured_outputs
    )
    try:
        return msgspec.convert(fields, wire.SamplingSpec, strict=False)
    except msgspec.ValidationError as err:
        raise bad_request(str(err), param=wire_param(err)) from None


def output_budget(
    prompt_len: int,
    req: ChatCompletionRequest | CompletionRequest,
    max_model_len: int,
    default_max_tokens: int | None = None,
) -> int:
    """max_tokens for one prompt: the client's cap, or what remains of the context.

    default_max_tokens (the model's max_new_tokens) caps a request that names no limit.
    """
    requested = req.requested_max_tokens()
    too_long = context_length_error(prompt_len, requested, max_model_len)
    if too_long is not None:
        param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        if requested is not None and prompt_len < max_model_len:
            uses_mct = isinstance(req, ChatCompletionRequest) and req.max_completion_tokens
            param = "max_completion_tokens" if uses_mct else "max_tokens"
        raise bad_request(too_long, param=param, code="context_length_exceeded")
    if requested is not None:
        return requested
    remaining = max_model_len - prompt_len
    return remaining if default_max_tokens is None else min(remaining, default_max_tokens)


async def tokenize(gw: Gateway, req: ChatCompletionRequest | CompletionRequest) -> list[list[int]]:
    """Token ids of each prompt; templating and encoding run in the tokenizer's threads."""
    if isinstance(req, ChatCompletionRequest):
        try:
            ids = await gw.tokenizer.encode_chat(
                req.template_messages(), req.add_generation_prompt, req.tool_dicts()
            )
        except TemplateError as err:
            raise bad_request(str(err), param="messages") from None
        prompts = [ids]
    else:
        prompts = []
        for prompt in req.prompts():
            if isinstance(prompt, str):
                prompts.append(await gw.tokenizer.encode_text(prompt))
            elif any(not 0 <= t < gw.tokenizer.vocab_size for t in prompt):
                raise bad_request(
                    f"prompt token ids must be in [0, {gw.tokenizer.vocab_size})", "prompt"
                )
            else:
                prompts.append(prompt)
    if any(not ids for ids in prompts):
        param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        raise bad_request("the prompt is empty after tokenization", param=param)
    return prompts


async def collect(gen: Generation, timer: RequestTimer) -> None:
    """Run a non-streaming generation to the end; 503 if a sequence fails."""
    async for delta in gen.deltas():
        timer.tokens(delta.num_new_tokens)
        if delta.error is not None:
            raise generation_failed(delta.error, delta.invalid)
    timer.finished()


async def handle_generation(request: Request, gw: Gateway, chat: bool) -> Response:
    """POST /v1/chat/completions and /v1/completions."""
    settings = gw.settings
    timer = RequestTimer(gw.metrics)  # TTFT counts from arrival: queueing included
    req: ChatCompletionRequest | CompletionRequest
    if chat:
        key, body, req = await read_request(request, gw, ChatCompletionRequest)
    else:
        key, body, req = await read_request(request, gw, CompletionRequest)
    tool_plan = None
    if isinstance(req, ChatCompletionRequest):
        tool_plan = plan_tools(
            req.tool_dicts(),
            req.tool_choice_value(),
            req.parallel_tool_calls,
            settings.enable_auto_tool_choice and gw.tool_parser is not None,
        )
    extractor = (
        None if tool_plan is None else ToolExtractor(tool_plan, gw.tool_parser, gw.tokenizer.hf)
    )
    n = req.n or 1
    if n > settings.max_n:
        raise bad_request(f"n must be at most {settings.max_n} (LAYERBUS_MAX_N)", param="n")
    status = await gw.client.ready_status_now()
    if status is None:
        raise unavailable(
            "the coordinator is not ready; see GET /health",
            retry_after_s=settings.retry_after_s,
            code="coordinator_not_ready",
        )
    try:
        ticket = await run_until_disconnect(
            request.receive, gw.gate.acquire(key, estimate_tokens(len(body)))
        )
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    gen: Generation | None = None
    handed_over = False
    try:
        prompts = await run_until_disconnect(request.receive, tokenize(gw, req))
        plans = [
            PromptPlan(
                ids,
                sampling_spec(
                    req,
                    output_budget(
                        len(ids), req, status.max_model_len, gw.defaults.get("max_tokens")
                    ),
                    gw.defaults,
                    tool_plan,
                ),
            )
            for ids in prompts
        ]
        top_logprobs = req.num_top_logprobs()
        gen = Generation(
            gw.client,
            gw.tokenizer,
            new_request_id("chatcmpl" if chat else "cmpl"),
            plans,
            n,
            req,
        )
        gw.metrics.prompt_tokens.inc(gen.prompt_tokens)
        meta = shapes.ResponseMeta(gen.request_id, int(time.time()), settings.model_name)
        gen.start()
        if req.stream:
            plan = StreamPlan(chat, meta, top_logprobs is not None, req.include_usage(), extractor)
            events = sse_events(gen, plan, timer, _count_error(gw.metrics))
            running = gen

            def on_close() -> None:
                running.close()
                gw.gate.release(ticket)

            handed_over = True
            return SSEResponse(events, on_close)
        await run_until_disconnect(request.receive, collect(gen, timer))
        use = shapes.usage(gen.prompt_tokens, gen.completion_tokens)
        build = shapes.chat_completion if chat else shapes.text_completion
        answer = build(meta, gen.sequences, top_logprobs is not None, use)
        if extractor is not None:
            for choice, seq in zip(answer["choices"], gen.sequences, strict=True):
                shapes.add_tool_calls(choice, extractor.extract(seq.text))
        if req.return_token_ids:
            for choice, seq in zip(answer["choices"], gen.sequences, strict=True):
                choice["token_ids"] = list(seq.token_ids)
        return OrjsonResponse(answer)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    finally:
        if not handed_over:
            if gen is not None:
                gen.close()
            gw.gate.release(ticket)


def _count_error(metrics: GatewayMetrics) -> Callable[[int], None]:
    def on_error(status: int) -> None:
        metrics.errors.labels(status=str(status)).inc()

    return on_error
