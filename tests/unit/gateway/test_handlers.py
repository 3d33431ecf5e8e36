"""Non-streaming generation end to end through HTTP: parameters, stops, n, aborts, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.gateway.tokenization import Tokenizer
from tests.unit.gateway.conftest import MODEL_NAME, REPLY_TEXT, RawRequest, RunningGateway
from tests.unit.gateway.fake_coordinator import FakeCoordinator

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def chat_prompt_len(tokenizer: Tokenizer) -> int:
    return len(asyncio.run(tokenizer.encode_chat(MESSAGES)))


def test_chat_completion_shape_text_and_usage(
    http: httpx.Client, fake: FakeCoordinator, tokenizer: Tokenizer
) -> None:
    r = http.post(CHAT, json={"model": MODEL_NAME, "messages": MESSAGES})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL_NAME and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == REPLY_TEXT
    prompt_len = chat_prompt_len(tokenizer)
    assert body["usage"] == {
        "prompt_tokens": prompt_len,
        "completion_tokens": len(fake.reply_tokens),
        "total_tokens": prompt_len + len(fake.reply_tokens),
    }
    [gen] = fake.generates
    assert gen.request_id == body["id"] + "-0"
    assert len(gen.prompt_token_ids) == prompt_len


def test_omitted_max_tokens_is_the_rest_of_the_context(
    http: httpx.Client, fake: FakeCoordinator, tokenizer: Tokenizer
) -> None:
    http.post(CHAT, json={"messages": MESSAGES})
    [gen] = fake.generates
    assert gen.sampling.max_tokens == fake.max_model_len - chat_prompt_len(tokenizer)


def test_max_tokens_gives_finish_reason_length(http: httpx.Client, fake: FakeCoordinator) -> None:
    r = http.post(CHAT, json={"messages": MESSAGES, "max_completion_tokens": 3})
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert REPLY_TEXT.startswith(body["choices"][0]["message"]["content"])
    assert fake.generates[0].sampling.max_tokens == 3


def test_sampling_parameters_reach_the_coordinator(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    body = {
        "messages": MESSAGES,
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": -1,
        "min_p": 0.05,
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "repetition_penalty": 1.1,
        "ignore_eos": True,
        "min_tokens": 2,
        "stop_token_ids": [7],
        "logprobs": True,
        "top_logprobs": 4,
        "user": "someone",
        "unknown_field": {"ignored": True},
    }
    assert http.post(CHAT, json=body).status_code == 200
    s = fake.generates[0].sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (
        50,
        0.3,
        0.9,
        0,
        0.05,
        11,
    )
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (0.5, -0.5, 1.1)
    assert (s.ignore_eos, s.min_tokens, s.stop_token_ids, s.logprobs) == (True, 2, [7], 4)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_stop_string_truncates_and_aborts_the_request(
    http: httpx.Client, fake: FakeCoordinator, path: str
) -> None:
    fake.token_delay_s = 0.01  # keep the fake generating after the stop is found
    payload = {"stop": ["STOP", "never"], "max_tokens": 100}
    payload |= {"messages": MESSAGES} if path == CHAT else {"prompt": "x"}
    body = http.post(path, json=payload).json()
    choice = body["choices"][0]
    text = choice["message"]["content"] if path == CHAT else choice["text"]
    assert text == REPLY_TEXT[: REPLY_TEXT.index("STOP")]
    assert choice["finish_reason"] == "stop"
    assert fake.wait_for(lambda: fake.aborted == [body["id"] + "-0"])
    # Usage counts the tokens generated up to the stop, not the whole canned reply.
    assert body["usage"]["completion_tokens"] < len(fake.reply_tokens)


def test_n_fans_out_with_distinct_seeds(http: httpx.Client, fake: FakeCoordinator) -> None:
    body = http.post(CHAT, json={"messages": MESSAGES, "n": 3, "seed": 7, "max_tokens": 4}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(g.request_id for g in fake.generates) == [f"{body['id']}-{i}" for i in range(3)]
    assert sorted(g.sampling.seed or 0 for g in fake.generates) == [7, 8, 9]
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["prompt_tokens"] == len(fake.generates[0].prompt_token_ids)


def test_completions_accept_batches_and_token_ids(
    http: httpx.Client, fake: FakeCoordinator, tokenizer: Tokenizer
) -> None:
    body = http.post(COMPLETIONS, json={"prompt": ["one", "two"], "n": 2, "max_tokens": 2}).json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    prompts = {g.request_id[-1]: g.prompt_token_ids for g in fake.generates}
    one, two = tokenizer._hf.encode("one"), tokenizer._hf.encode("two")
    assert (prompts["0"], prompts["1"], prompts["2"], prompts["3"]) == (one, one, two, two)
    assert body["usage"]["prompt_tokens"] == len(one) + len(two)
    ids = http.post(COMPLETIONS, json={"prompt": [5, 6, 7], "max_tokens": 1}).json()
    assert ids["usage"]["prompt_tokens"] == 3
    assert fake.generates[-1].prompt_token_ids == [5, 6, 7]


def test_completion_logprobs_shape(http: httpx.Client) -> None:
    body = http.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3, "logprobs": 2}).json()
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 3
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    assert all(len(top) <= 2 for top in lp["top_logprobs"])


def test_chat_logprobs_shape(http: httpx.Client) -> None:
    body = {"messages": MESSAGES, "max_tokens": 5, "logprobs": True, "top_logprobs": 3}
    content = http.post(CHAT, json=body).json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 5
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert len(entry["top_logprobs"]) == 3
        assert all(set(t) == {"token", "logprob", "bytes"} for t in entry["top_logprobs"])
    text = bytes(b for entry in content for b in entry["bytes"]).decode()
    assert text == REPLY_TEXT[: len(text)] and text


def test_generation_error_is_503_in_openai_shape(http: httpx.Client, fake: FakeCoordinator) -> None:
    fake.fail_with = "stage 1 at 10.0.0.2 stopped responding"
    r = http.post(CHAT, json={"messages": MESSAGES})
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "generation_failed"
    assert "stage 1 at 10.0.0.2" in error["message"]


def test_client_disconnect_aborts_a_non_streaming_request(
    gateway: RunningGateway, fake: FakeCoordinator
) -> None:
    fake.hang = True
    request = RawRequest(gateway.url, CHAT, {"messages": MESSAGES, "n": 2})
    assert fake.wait_for(lambda: len(fake.generates) == 2)
    request.close()
    assert fake.wait_for(lambda: fake.aborted_ids() == set(fake.generate_ids()))


def test_request_with_no_output_fails_after_the_request_timeout(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(request_timeout_s=0.3)
    with gw.client() as http:
        r = http.post(CHAT, json={"messages": MESSAGES})
    assert r.status_code == 503
    assert "LAYERBUS_REQUEST_TIMEOUT_S" in r.json()["error"]["message"]
    assert fake.wait_for(lambda: fake.aborted_ids() == set(fake.generate_ids()))


def test_coordinator_going_silent_fails_requests_in_flight(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(coordinator_timeout_s=0.5)
    with gw.client() as http:
        request = RawRequest(gw.url, CHAT, {"messages": MESSAGES})
        assert fake.wait_for(lambda: len(fake.generates) == 1)
        fake.answer_status = False
        response = request.read_all()
        assert response.startswith(b"HTTP/1.1 503")
        assert b"silent" in response
        assert http.get("/health").status_code == 503


def test_slow_tokenization_does_not_stall_the_event_loop(
    gateway: RunningGateway, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    entered = threading.Event()
    original = tokenizer._encode_chat_sync

    def slow(messages: list[dict[str, Any]], *rest: Any) -> list[int]:
        entered.set()
        release.wait(30)  # stands in for templating a huge prompt
        return original(messages, *rest)

    monkeypatch.setattr(tokenizer, "_encode_chat_sync", slow)
    request = RawRequest(gateway.url, CHAT, {"messages": MESSAGES, "max_tokens": 2})
    try:
        assert entered.wait(10)
        with gateway.client() as http:
            # The loop still answers while the tokenizer thread is busy.
            assert http.get("/health").status_code == 200
            assert http.get("/metrics").status_code == 200
    finally:
        release.set()
    assert request.read_all().startswith(b"HTTP/1.1 200")


def test_return_token_ids_gives_the_generated_ids(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    body = http.post(
        COMPLETIONS, json={"prompt": [5, 6], "max_tokens": 3, "return_token_ids": True}
    ).json()
    assert body["choices"][0]["token_ids"] == fake.reply_tokens[:3]
    plain = http.post(COMPLETIONS, json={"prompt": [5, 6], "max_tokens": 3}).json()
    assert "token_ids" not in plain["choices"][0]


def test_a_coordinator_ready_since_the_last_poll_serves_the_request(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.ready = False  # e.g. a restarted coordinator whose stages are re-registering
    gw = start_gateway(wait_ready=False, status_interval_s=60, coordinator_timeout_s=60)
    with gw.client() as http:
        for _ in range(500):  # bounded: until the gateway holds the "not ready" answer
            health = http.get("/health")
            if health.json()["error"]["code"] == "coordinator_not_ready":
                break
        assert health.json()["error"]["code"] == "coordinator_not_ready"
        fake.ready = True  # the gateway's next poll is a minute away
        r = http.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 3})
        assert r.status_code == 200, r.text


def test_logit_bias_reaches_the_coordinator_keyed_by_token_id(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    body = {"messages": MESSAGES, "max_tokens": 4, "logit_bias": {"42": 5, "7": -100}}
    assert http.post(CHAT, json=body).status_code == 200
    assert fake.generates[0].sampling.logit_bias == {42: 5.0, 7: -100.0}


def test_a_logit_bias_key_that_is_no_token_id_is_a_400_naming_it(http: httpx.Client) -> None:
    r = http.post(CHAT, json={"messages": MESSAGES, "logit_bias": {"the": 5}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


def test_allowed_token_ids_reach_the_coordinator(http: httpx.Client, fake: FakeCoordinator) -> None:
    body = {"prompt": "x", "max_tokens": 4, "allowed_token_ids": [5, 6]}
    assert http.post(COMPLETIONS, json=body).status_code == 200
    assert fake.generates[0].sampling.allowed_token_ids == [5, 6]


def test_empty_allowed_token_ids_are_a_400_naming_them(http: httpx.Client) -> None:
    r = http.post(COMPLETIONS, json={"prompt": "x", "allowed_token_ids": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "allowed_token_ids"


def test_bad_words_reach_the_coordinator(http: httpx.Client, fake: FakeCoordinator) -> None:
    body = {"messages": MESSAGES, "max_tokens": 4, "bad_words": ["Paris", " London"]}
    assert http.post(CHAT, json=body).status_code == 200
    assert fake.generates[0].sampling.bad_words == ["Paris", " London"]


def test_include_stop_str_in_output_keeps_the_stop_string(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    payload = {"messages": MESSAGES, "stop": ["STOP"], "include_stop_str_in_output": True}
    body = http.post(CHAT, json=payload).json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == REPLY_TEXT[: REPLY_TEXT.index("STOP") + len("STOP")]
    assert choice["finish_reason"] == "stop"


def test_skip_special_tokens_false_reaches_the_text(
    http: httpx.Client, fake: FakeCoordinator, tokenizer: Tokenizer
) -> None:
    fake.reply_tokens = list(tokenizer._hf.encode("Hi<|im_start|>", add_special_tokens=False))
    plain = http.post(CHAT, json={"messages": MESSAGES}).json()
    raw = http.post(CHAT, json={"messages": MESSAGES, "skip_special_tokens": False}).json()
    assert plain["choices"][0]["message"]["content"] == "Hi"
    assert raw["choices"][0]["message"]["content"] == "Hi<|im_start|>"
