"""Streaming responses: SSE chunk shapes, usage, in-band errors, disconnect -> Abort."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.unit.gateway.conftest import REPLY_TEXT, RawRequest, RunningGateway
from tests.unit.gateway.fake_coordinator import FakeCoordinator
from tests.unit.gateway.sse import events

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def stream(http: httpx.Client, path: str, **body: Any) -> tuple[httpx.Response, list[Any]]:
    if path == CHAT:
        body.setdefault("messages", MESSAGES)
    else:
        body.setdefault("prompt", "Say hello")
    r = http.post(path, json={"stream": True, **body})
    return r, events(r.text)


def test_chat_stream_chunks_and_usage(http: httpx.Client, fake: FakeCoordinator) -> None:
    r, evs = stream(http, CHAT, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert evs[-1] == "[DONE]"
    chunks = evs[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    first, usage_chunk, choice_chunks = chunks[0], chunks[-1], chunks[1:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in choice_chunks)
    assert text == REPLY_TEXT
    assert "\ufffd" not in "".join(
        c["choices"][0]["delta"].get("content", "") for c in choice_chunks
    )
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in choice_chunks[:-1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(fake.reply_tokens)
    assert usage_chunk["usage"]["total_tokens"] == (
        usage_chunk["usage"]["prompt_tokens"] + len(fake.reply_tokens)
    )


def test_no_usage_chunk_unless_asked(http: httpx.Client) -> None:
    _, evs = stream(http, CHAT, max_tokens=3)
    assert all("usage" not in e for e in evs[:-1])
    assert evs[-2]["choices"][0]["finish_reason"] == "length"


def test_completion_stream_with_logprobs(http: httpx.Client) -> None:
    _, evs = stream(http, COMPLETIONS, logprobs=1, stream_options={"include_usage": True})
    chunks = [e for e in evs[:-1] if e["choices"]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == REPLY_TEXT
    tokens = [
        t
        for c in chunks
        if c["choices"][0]["logprobs"]
        for t in c["choices"][0]["logprobs"]["tokens"]
    ]
    assert len(tokens) == evs[-2]["usage"]["completion_tokens"]


def test_n_streams_every_choice(http: httpx.Client) -> None:
    _, evs = stream(http, CHAT, n=2, max_tokens=3)
    by_index: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for chunk in evs[:-1]:
        choice = chunk["choices"][0]
        by_index[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            finished.add(choice["index"])
    assert finished == {0, 1}
    assert by_index[0] == by_index[1] and REPLY_TEXT.startswith(by_index[0])


def test_error_mid_stream_is_one_error_event_then_done(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    fake.fail_with = "stage 0 lost its KV cache"
    r, evs = stream(http, CHAT)
    assert r.status_code == 200
    assert evs[-1] == "[DONE]"
    errors = [e for e in evs[:-1] if "error" in e]
    assert len(errors) == 1 and evs[-2] is errors[0]
    assert set(errors[0]["error"]) == {"message", "type", "param", "code"}
    assert "KV cache" in errors[0]["error"]["message"]


def test_stop_string_in_a_stream_truncates_and_aborts(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    fake.token_delay_s = 0.01
    _, evs = stream(http, COMPLETIONS, stop="STOP")
    text = "".join(e["choices"][0]["text"] for e in evs[:-1] if e["choices"])
    assert text == REPLY_TEXT[: REPLY_TEXT.index("STOP")]
    assert "ST" not in text.split(".")[-1]  # the partial stop was never sent
    assert fake.wait_for(lambda: fake.aborted_ids() == set(fake.generate_ids()))


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_disconnect_mid_stream_aborts_every_sequence(
    gateway: RunningGateway, fake: FakeCoordinator, path: str
) -> None:
    fake.token_delay_s = 0.05  # slow enough that the client leaves mid-stream
    body: dict[str, Any] = {"stream": True, "n": 2}
    body |= {"messages": MESSAGES} if path == CHAT else {"prompt": "x"}
    request = RawRequest(gateway.url, path, body)
    assert b"data: " in request.read_until(b"data: ")
    assert fake.wait_for(lambda: len(fake.generates) == 2)
    request.close()
    ok = fake.wait_for(lambda: fake.aborted_ids() == set(fake.generate_ids()))
    assert ok, (fake.aborted, fake.generate_ids(), fake._active.keys())


def test_disconnect_before_first_token_aborts(
    gateway: RunningGateway, fake: FakeCoordinator
) -> None:
    fake.hang = True
    request = RawRequest(gateway.url, CHAT, {"messages": MESSAGES, "stream": True})
    assert fake.wait_for(lambda: len(fake.generates) == 1)
    request.close()
    assert fake.wait_for(lambda: fake.aborted_ids() == set(fake.generate_ids()))
