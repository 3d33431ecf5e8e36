"""Tool calling: tool_choice -> constraint, and model output -> OpenAI tool_calls.

`required` and a named function constrain the output with a JSON Schema
(the same schema vLLM's server builds), so the answer always parses. `auto`
lets the model decide; vLLM's own tool parser (--tool-call-parser) extracts
the calls from the text.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from services.gateway.errors import bad_request
from shared import wire


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request uses its tools; immutable value, one per request."""

    mode: str  # "auto", "required" or "named"
    tools: list[dict[str, Any]]
    name: str | None = None
    parallel: bool | None = None


def _params_or_empty(params: dict[str, Any] | None) -> dict[str, Any]:
    return params if params else {"type": "object", "properties": {}}


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = tool.get("function") or {}
    return fn


def plan_tools(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
    auto_enabled: bool,
) -> ToolPlan | None:
    """The request's tool mode, or None when tools play no part; 400 when inconsistent."""
    choice = tool_choice if tool_choice is not None else ("auto" if tools else "none")
    if choice == "none":
        return None
    if not tools:
        raise bad_request("tool_choice requires tools", param="tool_choice")
    if isinstance(choice, dict):
        name = _function(choice).get("name")
        known = [_function(t).get("name") for t in tools]
        if name not in known:
            raise bad_request(
                f"tool_choice names the function {name!r}, which is not in tools",
                param="tool_choice",
            )
        return ToolPlan("named", tools, name=name, parallel=parallel_tool_calls)
    if choice == "auto" and not auto_enabled:
        raise bad_request(
            '"auto" tool choice requires the gateway to run with --enable-auto-tool-choice '
            "and --tool-call-parser",
            param="tool_choice",
        )
    return ToolPlan(choice, tools, parallel=parallel_tool_calls)


def tool_schema(plan: ToolPlan) -> dict[str, Any] | None:
    """The JSON Schema that constrains `required` and named calls (vLLM's shape)."""
    if plan.mode == "named":
        for tool in plan.tools:
            fn = _function(tool)
            if fn.get("name") == plan.name:
                return _params_or_empty(fn.get("parameters"))
    if plan.mode != "required":
        return None
    defs: dict[str, Any] = {}
    variants = []
    for tool in plan.tools:
        fn = _function(tool)
        params = copy.deepcopy(fn.get("parameters"))
        if params:
            for key, value in (params.pop("$defs", None) or {}).items():
                if key in defs and defs[key] != value:
                    raise bad_request(f"tools define $defs.{key} twice, differently", "tools")
                defs[key] = value
        variants.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [fn.get("name")]},
                    "parameters": _params_or_empty(params),
                },
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": variants},
    }
    if plan.parallel is False:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def tool_constraint(plan: ToolPlan | None) -> wire.StructuredSpec | None:
    """The structured-output constraint for a tool plan (None for auto)."""
    schema = None if plan is None else tool_schema(plan)
    return None if schema is None else wire.StructuredSpec(json=orjson.dumps(schema).decode())


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-tool-{uuid.uuid4().hex}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


class ToolExtractor:
    """Turns a finished answer into (content, tool_calls); one per request, event loop only."""

    def __init__(self, plan: ToolPlan, parser_cls: Any = None, tokenizer: Any = None) -> None:
        self.plan = plan
        self.parser_cls = parser_cls
        self.tokenizer = tokenizer

    def extract(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        plan = self.plan
        if plan.mode == "named":
            return None, [_call(plan.name or "", text)]
        if plan.mode == "required":
            try:
                calls = orjson.loads(text)
            except orjson.JSONDecodeError:
                return text, []  # cut short (max_tokens): hand back what came
            return None, [
                _call(c["name"], orjson.dumps(c.get("parameters", {})).decode())
                for c in calls
                if isinstance(c, dict) and "name" in c
            ]
        return self._auto(text)

    def _auto(self, text: str) -> tuple[str | None, list[dict[str, Any]]]:
        if self.parser_cls is None:
            return text, []
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        request = ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": ""}], "tools": self.plan.tools}
        )
        parser = self.parser_cls(self.tokenizer, request.tools)
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, []
        calls = [_call(c.function.name, c.function.arguments) for c in info.tool_calls]
        return info.content, calls


def load_tool_parser(name: str) -> Any:
    """vLLM's tool parser class registered as `name` (imports vLLM: call off the loop)."""
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError:
        raise ValueError(
            f"unknown --tool-call-parser {name!r}; vLLM knows "
            f"{', '.join(sorted(ToolParserManager.list_registered()))}"
        ) from None
