"""Acceptance (issue 10): structured outputs, tools, generation_config defaults, utilities.

Every request here runs against real processes: layerbus clusters (one and two
stages) and, as the reference, single-process `vllm serve` with the same model
folder, chat template and tool parser.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.cluster import Cluster
from tests.e2e.genconf import GENERATION, NAME, TOOL_ARGS

pytestmark = pytest.mark.e2e

SPLITS = {"two-stages": [(0, 15), (15, 30)], "one-stage": [(0, 30)]}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER, TIME]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def reference(genconf_reference: str) -> str:
    return genconf_reference


@pytest.fixture(scope="module", params=list(SPLITS))
def cluster(
    request: pytest.FixtureRequest, genconf_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if request.param == "two-stages":  # shared with test_sampling_parameters.py
        request.getfixturevalue("genconf_reference")  # starts both side by side
        yield request.getfixturevalue("genconf_two_stages")
        return
    c = Cluster(
        model=genconf_model,
        layers=SPLITS[request.param],
        log_dir=tmp_path_factory.mktemp(request.param),
        gateway_args=TOOL_ARGS,
    )
    try:
        yield c.start()
    finally:
        c.stop()


def chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(url + "/v1/chat/completions", json={"model": NAME, **body}, timeout=300)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


# ---------------------------------------------------------------- 1. openai SDK .parse()


class Address(BaseModel):
    city: str
    zip_code: str


class Person(BaseModel):
    name: str
    age: int
    address: Address


class Color(enum.StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Paint(BaseModel):
    color: Color
    glossy: bool


class ShoppingList(BaseModel):
    items: list[str]
    total_price: float


PARSE_CASES = [
    (Person, ["Describe a person who lives in Paris.", "Invent a neighbour."]),
    (Paint, ["Pick a paint for a kitchen.", "What colour is the sky?"]),
    (ShoppingList, ["Make a shopping list of three fruits."]),
]


@pytest.mark.parametrize("model,questions", PARSE_CASES, ids=["nested", "enum", "array"])
def test_sdk_parse_validates_every_time(
    cluster: Cluster, model: type[BaseModel], questions: list[str]
) -> None:
    sdk = client(cluster.url)
    # Greedy: sampled, a 135M model may wander in JSON whitespace up to max_tokens.
    for question in questions:
        completion = sdk.chat.completions.parse(
            model=NAME,
            messages=[{"role": "user", "content": question}],
            response_format=model,
            max_tokens=300,
            temperature=0,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, model)


# ---------------------------------------------------------------- 2. same text as vLLM

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "question", ["Describe a person as JSON.", "Invent a character for a story."]
)
def test_greedy_json_schema_matches_vllm(cluster: Cluster, reference: str, question: str) -> None:
    body = {
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 80,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
        },
    }
    answer = chat(cluster.url, body)["choices"][0]
    ours = answer["message"]["content"]
    theirs = chat(reference, body)["choices"][0]["message"]["content"]
    assert ours == theirs
    if answer["finish_reason"] == "stop":  # a length cut leaves the JSON unfinished
        json.loads(ours)


def test_structured_outputs_extension(cluster: Cluster) -> None:
    choice = chat(
        cluster.url,
        {"messages": ASK_WEATHER, "max_tokens": 5, "structured_outputs": {"choice": ["yes", "no"]}},
    )
    assert choice["choices"][0]["message"]["content"] in ("yes", "no")
    resp = httpx.post(
        cluster.url + "/v1/completions",
        json={
            "prompt": "My phone number is",
            "max_tokens": 20,
            "temperature": 0,
            "structured_outputs": {"regex": "[0-9]{3}-[0-9]{4}"},
        },
        timeout=300,
    )
    text = resp.json()["choices"][0]["text"]
    assert len(text) == 8 and text[3] == "-" and text.replace("-", "").isdigit(), text


# ---------------------------------------------------------------- 3. tools


def _check_weather_args(arguments: str) -> None:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")


def _streamed_calls(url: str, body: dict[str, Any]) -> tuple[str | None, dict[int, list[str]]]:
    stream = client(url).chat.completions.create(model=NAME, stream=True, **body)
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, ["", ""])
                entry[0] += (call.function and call.function.name) or ""
                entry[1] += (call.function and call.function.arguments) or ""
    return finish, calls


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    "tool_choice",
    [{"type": "function", "function": {"name": "get_weather"}}, "required"],
    ids=["named", "required"],
)
def test_forced_tool_calls_match_the_schema(
    cluster: Cluster, tool_choice: Any, stream: bool
) -> None:
    body = {
        "messages": ASK_WEATHER,
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "temperature": 0,
        "max_tokens": 120,
    }
    if stream:
        finish, calls = _streamed_calls(cluster.url, body)
        named = [tuple(c) for c in calls.values()]
    else:
        choice = chat(cluster.url, body)["choices"][0]
        finish = choice["finish_reason"]
        named = [
            (c["function"]["name"], c["function"]["arguments"])
            for c in choice["message"]["tool_calls"]
        ]
    assert finish == "tool_calls"
    assert named
    for name, arguments in named:
        assert name in ("get_weather", "get_time")
        if name == "get_weather":
            _check_weather_args(arguments)
        else:
            assert set(json.loads(arguments)) == {"city"}
    if isinstance(tool_choice, dict):
        assert [n for n, _ in named] == ["get_weather"]


def _one_shot() -> list[dict[str, Any]]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Rome"})},
    }
    return [
        {"role": "user", "content": "What is the weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_auto_tool_choice_uses_the_hermes_parser(
    cluster: Cluster, reference: str, stream: bool
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                **WEATHER["function"],
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    body = {"messages": _one_shot(), "tools": tools, "temperature": 0, "max_tokens": 60}
    if stream:
        finish, calls = _streamed_calls(cluster.url, body)
        got = [tuple(c) for c in calls.values()]
    else:
        choice = chat(cluster.url, body)["choices"][0]
        finish = choice["finish_reason"]
        got = [
            (c["function"]["name"], c["function"]["arguments"])
            for c in choice["message"].get("tool_calls") or []
        ]
    assert finish == "tool_calls"
    assert [(n, json.loads(a)) for n, a in got] == [("get_weather", {"city": "Paris"})]
    expected = chat(reference, body)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in expected] == ["get_weather"]
    assert json.loads(expected[0]["function"]["arguments"]) == {"city": "Paris"}


def test_tool_choice_none_answers_in_text(cluster: Cluster) -> None:
    choice = chat(
        cluster.url,
        {
            "messages": ASK_WEATHER,
            "tools": TOOLS,
            "tool_choice": "none",
            "temperature": 0,
            "max_tokens": 20,
        },
    )["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    assert not choice["message"].get("tool_calls")
    assert choice["message"]["content"]


# ---------------------------------------------------------------- 4. generation_config


@pytest.mark.parametrize("seed", [1, 2])
def test_omitted_sampling_fields_follow_generation_config(
    cluster: Cluster, reference: str, seed: int
) -> None:
    body = {
        "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
        "seed": seed,
        "max_tokens": 40,
    }
    ours = chat(cluster.url, body)["choices"][0]["message"]["content"]
    assert ours == chat(reference, body)["choices"][0]["message"]["content"]
    explicit = chat(cluster.url, {**body, **GENERATION})["choices"][0]["message"]["content"]
    assert ours == explicit


# ---------------------------------------------------------------- 5. utilities


def test_tokenize_detokenize_round_trip(cluster: Cluster, reference: str) -> None:
    text = "Structured outputs, tools, and naïve café prices: 12.50 €."
    ours = httpx.post(cluster.url + "/tokenize", json={"model": NAME, "prompt": text}).json()
    theirs = httpx.post(reference + "/tokenize", json={"model": NAME, "prompt": text}).json()
    assert ours["tokens"] == theirs["tokens"] and ours["count"] == len(ours["tokens"])
    back = httpx.post(cluster.url + "/detokenize", json={"model": NAME, "tokens": ours["tokens"]})
    assert back.json() == {"prompt": text}
    messages = {"model": NAME, "messages": ASK_WEATHER}
    ours_chat = httpx.post(cluster.url + "/tokenize", json=messages).json()
    theirs_chat = httpx.post(reference + "/tokenize", json=messages).json()
    assert ours_chat["tokens"] == theirs_chat["tokens"]
    version = httpx.get(cluster.url + "/version").json()
    assert version["version"] == httpx.get(reference + "/version").json()["version"]


def test_unknown_fields_warn_once_and_answer(cluster: Cluster) -> None:
    field = f"layerbus_unknown_{os.getpid()}"
    answer = chat(cluster.url, {"messages": ASK_WEATHER, "max_tokens": 3, field: 1})
    assert answer["choices"][0]["message"]["content"] is not None
    lines = [ln for ln in cluster.tail("gateway", 400).splitlines() if field in ln]
    assert len(lines) == 1 and "ignored" in lines[0], lines
