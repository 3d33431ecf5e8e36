"""The official openai client accepts every response shape the gateway produces."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.unit.gateway.conftest import MODEL_NAME, REPLY_TEXT, RunningGateway
from tests.unit.gateway.fake_coordinator import FakeCoordinator

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL_NAME]


def test_chat_completion_with_logprobs(client: openai.OpenAI, fake: FakeCoordinator) -> None:
    resp = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        logprobs=True,
        top_logprobs=2,
        seed=1,
    )
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == REPLY_TEXT
    assert choice.finish_reason == "stop"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert len(choice.logprobs.content) == len(fake.reply_tokens)
    first = choice.logprobs.content[0]
    assert first.token == "Hello" and first.bytes == list(b"Hello")
    assert len(first.top_logprobs) == 2
    assert resp.usage is not None
    assert resp.usage.completion_tokens == len(fake.reply_tokens)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=5,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert REPLY_TEXT.startswith(text) and text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_completion_with_logprobs(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL_NAME, prompt="Say", max_tokens=3, logprobs=2)
    choice = resp.choices[0]
    assert choice.text == "Hello there!" and choice.finish_reason == "length"
    assert choice.logprobs is not None
    assert choice.logprobs.tokens == ["Hello", " there", "!"]
    assert choice.logprobs.text_offset == [0, 5, 11]
    assert choice.logprobs.token_logprobs is not None and len(choice.logprobs.token_logprobs) == 3
    assert resp.usage is not None and resp.usage.completion_tokens == 3


def test_completion_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=MODEL_NAME,
            prompt="Say",
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == REPLY_TEXT
    assert chunks[-1].usage is not None


def test_errors_map_to_openai_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            temperature=7,
        )
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=100_000)
    assert too_long.value.code == "context_length_exceeded"


def test_error_mid_stream_raises_in_the_client(
    client: openai.OpenAI, fake: FakeCoordinator
) -> None:
    fake.fail_with = "pipeline broke"
    with pytest.raises(openai.APIError, match="pipeline broke"):
        list(
            client.chat.completions.create(
                model=MODEL_NAME,
                messages=MESSAGES,
                stream=True,
            )
        )
