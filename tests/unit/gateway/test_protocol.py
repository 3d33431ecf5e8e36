"""Request parsing: valid bodies, and 400s that name the offending parameter."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.gateway.errors import APIError
from services.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    require_model,
)

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}


def chat(**fields: Any) -> bytes:
    return orjson.dumps({**CHAT, **fields})


def test_unknown_fields_are_ignored_and_defaults_apply() -> None:
    req = parse_request(chat(model="m", frobnicate=True, tools=[]), ChatCompletionRequest)
    assert req.model == "m"
    assert req.n is None and req.stream is False
    assert req.num_top_logprobs() is None
    assert req.stop_strings() == []


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = parse_request(chat(max_tokens=5, max_completion_tokens=9), ChatCompletionRequest)
    assert req.requested_max_tokens() == 9


def test_multi_part_text_content_is_joined_for_the_template() -> None:
    body = orjson.dumps(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        }
    )
    req = parse_request(body, ChatCompletionRequest)
    assert req.template_messages() == [{"role": "user", "content": "a\nb"}]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("text", ["text"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_completion_prompt_forms(prompt: Any, expected: list[Any]) -> None:
    req = parse_request(orjson.dumps({"prompt": prompt}), CompletionRequest)
    assert req.prompts() == expected


def test_stop_accepts_string_or_list_and_drops_empty_strings() -> None:
    assert parse_request(chat(stop="x"), ChatCompletionRequest).stop_strings() == ["x"]
    req = parse_request(chat(stop=["a", "", "b"]), ChatCompletionRequest)
    assert req.stop_strings() == ["a", "b"]


def test_stream_options_include_usage() -> None:
    req = parse_request(
        chat(stream=True, stream_options={"include_usage": True}), ChatCompletionRequest
    )
    assert req.include_usage()


def test_chat_logprobs_map_to_top_logprobs() -> None:
    assert parse_request(chat(logprobs=True), ChatCompletionRequest).num_top_logprobs() == 0
    req = parse_request(chat(logprobs=True, top_logprobs=3), ChatCompletionRequest)
    assert req.num_top_logprobs() == 3


BAD_CHAT: list[tuple[bytes, str | None]] = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (orjson.dumps({}), "messages"),
    (orjson.dumps({"messages": []}), "messages"),
    (orjson.dumps({"messages": [{"content": "x"}]}), "messages[0].role"),
    (orjson.dumps({"messages": "hi"}), "messages"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature=-0.1), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(top_p=1.5), "top_p"),
    (chat(top_k=-2), "top_k"),
    (chat(min_p=1.5), "min_p"),
    (chat(n=0), "n"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_completion_tokens=-1), "max_completion_tokens"),
    (chat(presence_penalty=3), "presence_penalty"),
    (chat(frequency_penalty=-3), "frequency_penalty"),
    (chat(repetition_penalty=0), "repetition_penalty"),
    (chat(top_logprobs=21, logprobs=True), "top_logprobs"),
    (chat(top_logprobs=2), "top_logprobs"),
    (chat(stop=5), "stop"),
    (chat(seed="abc"), "seed"),
    (chat(stream_options={"include_usage": "maybe"}), "stream_options.include_usage"),
    (
        orjson.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        "messages[0].content[0].type",
    ),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT)
def test_bad_chat_bodies_are_400_naming_the_parameter(body: bytes, param: str | None) -> None:
    with pytest.raises(APIError) as info:
        parse_request(body, ChatCompletionRequest)
    err = info.value
    assert (err.status, err.type, err.param) == (400, "invalid_request_error", param)
    if param:
        assert param in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({"prompt": "x", "logprobs": -1}, "logprobs"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": {"a": 1}}, "prompt"),
    ],
)
def test_bad_completion_bodies_are_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_request(orjson.dumps(body), CompletionRequest)
    assert (info.value.status, info.value.param) == (400, param)


def test_require_model() -> None:
    require_model(None, "served")
    require_model("served", "served")
    require_model("/models/served", "served", aliases=("/models/served",))
    with pytest.raises(APIError) as info:
        require_model("gpt-4", "served")
    assert (info.value.status, info.value.code, info.value.param) == (
        404,
        "model_not_found",
        "model",
    )
