"""OpenAI request bodies: pydantic models, range checks and errors naming the parameter."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.errors import APIError, bad_request
from services.gateway.wire_fields import struct_model, wire_field
from shared import wire

log = logging.getLogger("layerbus.gateway")


class _Lenient(BaseModel):
    """Base of request models (unknown fields ignored); parsed per request on the loop."""

    model_config = ConfigDict(extra="ignore")

    def check(self) -> None:
        """Cross-field rules pydantic constraints cannot express (none by default)."""


class ModelRequest(_Lenient):
    """Base of request bodies that name the model they ask for; parsed per request."""

    model: str | None = None


class StreamOptions(_Lenient):
    """`stream_options` of a streaming request; part of a parsed body."""

    include_usage: bool | None = False


class TextPart(_Lenient):
    """One part of a multi-part content (text only); part of a parsed body."""

    type: str = "text"
    text: str | None = None


class ChatMessage(_Lenient):
    """One chat message (extra keys go to the template); part of a parsed body."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[TextPart] | None = None


class JsonSchemaFormat(_Lenient):
    """`response_format.json_schema`: a named JSON Schema; part of a parsed body."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    """`response_format` (OpenAI); part of a parsed body."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# vLLM's `structured_outputs` extension: the fields of wire.StructuredSpec, declared there
# once; `json` may also be a schema object here (the gateway sends it as JSON text).
if TYPE_CHECKING:  # mypy cannot follow create_model
    StructuredOutputs: TypeAlias = _Lenient
else:
    StructuredOutputs = struct_model(
        "StructuredOutputs",
        wire.StructuredSpec,
        _Lenient,
        "vLLM's `structured_outputs` extension (one constraint); part of a parsed body.",
        widen={"json": str | dict[str, Any] | None},
    )


class SamplingRequest(ModelRequest):
    """Fields shared by chat and completion bodies; owned by one request's task."""

    max_tokens: int | None = wire_field("max_tokens")
    temperature: float | None = wire_field("temperature")
    top_p: float | None = wire_field("top_p")
    top_k: int | None = wire_field("top_k")
    min_p: float | None = wire_field("min_p")
    seed: int | None = wire_field("seed")
    stop: str | list[str] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stop_token_ids: list[int] | None = wire_field("stop_token_ids")
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias
    allowed_token_ids: list[int] | None = wire_field("allowed_token_ids")
    bad_words: list[str] | None = None
    n: int | None = Field(None, ge=1)
    presence_penalty: float | None = wire_field("presence_penalty")
    frequency_penalty: float | None = wire_field("frequency_penalty")
    repetition_penalty: float | None = wire_field("repetition_penalty")
    ignore_eos: bool | None = False
    min_tokens: int | None = wire_field("min_tokens")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extension: also return the generated token ids in each choice.
    return_token_ids: bool | None = False
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

    def stop_strings(self) -> list[str]:
        """`stop` as a list without empty strings."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        """Whether a streaming response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def requested_max_tokens(self) -> int | None:
        """The client's output-length cap, if any."""
        return self.max_tokens

    def num_top_logprobs(self) -> int | None:
        """Top candidates per token to report; None when logprobs are off."""
        return None


class FunctionDef(_Lenient):
    """`tools[].function`: a function the model may call; part of a parsed body."""

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Lenient):
    """One entry of `tools`; part of a parsed body."""

    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Lenient):
    """`tool_choice.function`; part of a parsed body."""

    name: str


class NamedToolChoice(_Lenient):
    """`tool_choice` naming one function; part of a parsed body."""

    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingRequest):
    """Body of POST /v1/chat/completions; owned by one request's task."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: int | None = wire_field("max_tokens")
    logprobs: bool | None = False
    top_logprobs: int | None = wire_field("logprobs")
    add_generation_prompt: bool = True

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def num_top_logprobs(self) -> int | None:
        if not self.logprobs:
            return None
        return self.top_logprobs or 0

    def check(self) -> None:
        """Cross-field rules pydantic constraints cannot express."""
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs requires logprobs=true", param="top_logprobs")
        for i, message in enumerate(self.messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.type != "text" or part.text is None:
                        param = f"messages[{i}].content[{j}].type"
                        raise bad_request(
                            f"{param}: content part type {part.type!r} is not supported; "
                            "only text parts are",
                            param=param,
                        )

    def template_messages(self) -> list[dict[str, Any]]:
        """Messages as plain dicts for the chat template, multi-part text joined."""
        out: list[dict[str, Any]] = []
        for message in self.messages:
            data = message.model_dump(exclude_none=True)
            if isinstance(message.content, list):
                data["content"] = "\n".join(p.text or "" for p in message.content)
            elif message.content is None:
                data["content"] = ""
            _arguments_as_objects(data)
            out.append(data)
        return out

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """`tools` as plain dicts for the chat template and tool parsers."""
        if not self.tools:
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def tool_choice_value(self) -> str | dict[str, Any] | None:
        """`tool_choice` as a string or plain dict."""
        choice = self.tool_choice
        return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice


def _arguments_as_objects(message: dict[str, Any]) -> None:
    """Tool-call arguments as objects: chat templates index into them (as vLLM renders)."""
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            with contextlib.suppress(orjson.JSONDecodeError):  # else text: the template decides
                fn["arguments"] = orjson.loads(fn["arguments"])


PromptInput = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingRequest):
    """Body of POST /v1/completions; owned by one request's task."""

    prompt: PromptInput
    logprobs: int | None = wire_field("logprobs")
    echo: bool | None = False

    def num_top_logprobs(self) -> int | None:
        return self.logprobs

    def check(self) -> None:
        """Cross-field rules pydantic constraints cannot express."""
        if self.echo:
            raise bad_request("echo is not supported", param="echo")
        if isinstance(self.prompt, list) and not self.prompt:
            raise bad_request("prompt must not be empty", param="prompt")

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s) as a list: each a text or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [[int(p) for p in prompt]]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "is-instance"}


def _param_path(loc: tuple[int | str, ...]) -> str | None:
    """('messages', 0, 'content', 'str') -> 'messages[0].content' (union tags dropped)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_TAGS:
            path += f".{part}" if path else part
    return path or None


Req = TypeVar("Req", bound="_Lenient")


def known_fields(model: type[BaseModel]) -> set[str]:
    """Top-level names (and aliases) a request model reads."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names


def warn_unknown_fields(data: dict[str, Any], model: type[BaseModel]) -> None:
    """One warning naming the body's fields the model ignores (vLLM's message)."""
    extra = sorted(data.keys() - known_fields(model))
    if extra:
        log.warning("The following fields were present in the request but ignored: %s", extra)


def parse_request(body: bytes, model: type[Req]) -> Req:
    """Decode and validate a JSON body, raising 400 APIErrors that name the parameter."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise bad_request(f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    warn_unknown_fields(data, model)
    try:
        request = model.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = _param_path(tuple(first["loc"]))
        where = f"{param}: " if param else ""
        raise bad_request(f"{where}{first['msg']}", param=param) from None
    request.check()
    return request


def require_model(requested: str | None, served: str, aliases: Sequence[str] = ()) -> None:
    """404 model_not_found unless the client asked for our model (or none).

    Aliases (the model folder path) are accepted too: `vllm bench serve --model <path>`
    sends the path when no served name is given.
    """
    if requested is not None and requested != served and requested not in aliases:
        raise APIError(
            404,
            f"model {requested!r} does not exist; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )
