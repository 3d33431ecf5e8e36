"""Routes of the app served by uvicorn: health, status, models, auth and every error shape."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from services.gateway.tokenization import Tokenizer
from tests.unit.gateway.conftest import (
    MODEL_NAME,
    MODEL_PATH,
    RawRequest,
    RunningGateway,
    launch_gateway,
)
from tests.unit.gateway.fake_coordinator import FakeCoordinator

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def test_health_is_200_when_the_coordinator_is_ready(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_health_is_503_when_the_coordinator_is_not_ready(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.ready, fake.detail = False, "waiting for stage 1"
    gw = start_gateway(wait_ready=False)
    with gw.client() as http:
        assert fake.wait_for(lambda: fake.status_queries > 0)
        r = http.get("/health")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "coordinator_not_ready"
        assert "waiting for stage 1" in r.json()["error"]["message"]
        r = http.post(CHAT, json={"messages": MESSAGES})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "coordinator_not_ready"
        fake.ready = True
        gw.wait_ready()


def test_unreachable_coordinator_is_503_everywhere_and_nothing_hangs(
    start_gateway: Callable[..., RunningGateway],
) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = start_gateway(wait_ready=False, coordinator=f"tcp://127.0.0.1:{port}")
    with gw.client() as http:
        health = http.get("/health")
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "coordinator_unreachable"
        status = http.get("/status")
        assert status.status_code == 503
        assert status.json()["error"]["code"] == "coordinator_unreachable"
        assert http.post(CHAT, json={"messages": MESSAGES}).status_code == 503


def test_status_reports_stages_and_layer_ranges(http: httpx.Client) -> None:
    body = http.get("/status").json()
    assert body["model"] == MODEL_NAME
    assert body["coordinator"]["ready"] is True
    assert body["coordinator"]["max_model_len"] == 2048
    stages = [(s["address"], s["layer_start"], s["layer_end"], s["state"]) for s in body["stages"]]
    assert stages == [
        ("tcp://10.0.0.1:6000", 0, 15, "ready"),
        ("tcp://10.0.0.2:6000", 15, 30, "ready"),
    ]


def test_status_lists_every_metrics_url_dtype_and_max_model_len(http: httpx.Client) -> None:
    body = http.get("/status").json()
    assert body["coordinator"]["metrics"] == "http://10.0.0.9:9100/metrics"
    assert body["coordinator"]["dtype"] == "bfloat16"
    first, second = body["stages"]
    assert (first["metrics"], first["dtype"], first["max_model_len"]) == (
        "http://10.0.0.1:9101/metrics",
        "bfloat16",
        1024,
    )
    assert (second["metrics"], second["dtype"], second["max_model_len"]) == ("", "", 0)
    # The gateway serves its own metrics on its HTTP port.
    assert body["gateway"]["metrics"] == f"{str(http.base_url).rstrip('/')}/metrics"


def test_models_lists_the_served_model(http: httpx.Client) -> None:
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in body["data"]] == [
        (MODEL_NAME, "model", 2048)
    ]


def test_served_model_name_and_folder_path_are_both_accepted(
    start_gateway: Callable[..., RunningGateway],
) -> None:
    gw = start_gateway(served_model_name="smol")
    with gw.client() as http:
        for model in ("smol", str(MODEL_PATH)):
            r = http.post(CHAT, json={"model": model, "messages": MESSAGES, "max_tokens": 2})
            assert r.status_code == 200 and r.json()["model"] == "smol"
        assert http.post(CHAT, json={"model": MODEL_NAME, "messages": MESSAGES}).status_code == 404


def long_prompt(n: int) -> list[int]:
    return [42] * n


ERROR_CASES: list[tuple[str, str, Any, int, str, str | None, str | None]] = [
    # (name, path, body, status, type, param, code)
    ("bad json", CHAT, b"{oops", 400, "invalid_request_error", None, None),
    ("not an object", CHAT, [1, 2], 400, "invalid_request_error", None, None),
    ("no messages", CHAT, {}, 400, "invalid_request_error", "messages", None),
    (
        "bad role",
        CHAT,
        {"messages": [{"content": "x"}]},
        400,
        "invalid_request_error",
        "messages[0].role",
        None,
    ),
    (
        "temperature",
        CHAT,
        {"messages": MESSAGES, "temperature": 3},
        400,
        "invalid_request_error",
        "temperature",
        None,
    ),
    (
        "top_p",
        COMPLETIONS,
        {"prompt": "x", "top_p": 0},
        400,
        "invalid_request_error",
        "top_p",
        None,
    ),
    ("n too big", CHAT, {"messages": MESSAGES, "n": 17}, 400, "invalid_request_error", "n", None),
    (
        "top_logprobs alone",
        CHAT,
        {"messages": MESSAGES, "top_logprobs": 2},
        400,
        "invalid_request_error",
        "top_logprobs",
        None,
    ),
    (
        "completion logprobs",
        COMPLETIONS,
        {"prompt": "x", "logprobs": 50},
        400,
        "invalid_request_error",
        "logprobs",
        None,
    ),
    (
        "min_tokens",
        CHAT,
        {"messages": MESSAGES, "max_tokens": 2, "min_tokens": 5},
        400,
        "invalid_request_error",
        "min_tokens",
        None,
    ),
    (
        "unknown model",
        CHAT,
        {"model": "gpt-4", "messages": MESSAGES},
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
    ),
    (
        "max_tokens too big",
        CHAT,
        {"messages": MESSAGES, "max_tokens": 5000},
        400,
        "invalid_request_error",
        "max_tokens",
        "context_length_exceeded",
    ),
    (
        "max_completion_tokens too big",
        CHAT,
        {"messages": MESSAGES, "max_completion_tokens": 2040},
        400,
        "invalid_request_error",
        "max_completion_tokens",
        "context_length_exceeded",
    ),
    (
        "prompt fills context",
        COMPLETIONS,
        {"prompt": long_prompt(2048)},
        400,
        "invalid_request_error",
        "prompt",
        "context_length_exceeded",
    ),
    (
        "prompt + max_tokens",
        COMPLETIONS,
        {"prompt": long_prompt(2000), "max_tokens": 49},
        400,
        "invalid_request_error",
        "max_tokens",
        "context_length_exceeded",
    ),
    (
        "token id out of vocab",
        COMPLETIONS,
        {"prompt": [1, 10**9]},
        400,
        "invalid_request_error",
        "prompt",
        None,
    ),
    ("empty prompt", COMPLETIONS, {"prompt": ""}, 400, "invalid_request_error", "prompt", None),
    (
        "echo",
        COMPLETIONS,
        {"prompt": "x", "echo": True},
        400,
        "invalid_request_error",
        "echo",
        None,
    ),
    (
        "body too large",
        CHAT,
        {"messages": [{"role": "user", "content": "x" * 20_000}]},
        413,
        "invalid_request_error",
        None,
        "request_too_large",
    ),
]


@pytest.fixture(scope="module")
def table_gateway(tokenizer: Tokenizer, reply_tokens: list[int]) -> Iterator[RunningGateway]:
    """One gateway (with a small body cap) shared by the error table."""
    coordinator = FakeCoordinator(reply_tokens=reply_tokens).start()
    gw = launch_gateway(tokenizer, coordinator.address, max_body_bytes=16_384)
    yield gw
    gw.stop()
    coordinator.stop()


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "type", "param", "code"),
    ERROR_CASES,
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_have_openai_shape(
    table_gateway: RunningGateway,
    name: str,
    path: str,
    body: Any,
    status: int,
    type: str,
    param: str | None,
    code: str | None,
) -> None:
    with table_gateway.client() as http:
        if isinstance(body, bytes):
            r = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = http.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (type, param, code)
    assert error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/v1/embeddings", 404, "not_found"),
        ("GET", CHAT, 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
def test_wrong_routes_have_openai_shape(
    http: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    r = http.request(method, path)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_api_keys(start_gateway: Callable[..., RunningGateway]) -> None:
    gw = start_gateway(api_keys=["sekret-1", "sekret-2"])
    body = {"messages": MESSAGES, "max_tokens": 2}
    with gw.client() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret-1"}):
            r = http.post(CHAT, json=body, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models").status_code == 401
        assert http.get("/status").status_code == 401
        ok = {"Authorization": "Bearer sekret-2"}
        assert http.post(CHAT, json=body, headers=ok).status_code == 200
        assert http.get("/v1/models", headers=ok).status_code == 200
        # Probes and scrapers need no key.
        assert http.get("/health").status_code == 200
        assert http.get("/metrics").status_code == 200
        assert http.get("/openapi.json").status_code == 200


def _hold_request(gw: RunningGateway, headers: dict[str, str] | None = None) -> RawRequest:
    """A chat request the hanging fake never answers; the test hangs up later."""
    return RawRequest(gw.url, CHAT, {"messages": MESSAGES}, headers)


def test_full_queue_is_503_with_retry_after_before_tokenizing(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(max_running_requests=1, max_queued_requests=0, retry_after_s=3)
    holder = _hold_request(gw)
    assert fake.wait_for(lambda: len(fake.generates) == 1)
    with gw.client() as http:
        r = http.post(CHAT, json={"messages": MESSAGES})
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "server_overloaded"
    holder.close()
    # The held request is aborted as soon as its client hangs up.
    assert fake.wait_for(lambda: len(fake.aborted) == 1)


def test_per_key_concurrency_is_429(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(api_keys=["a", "b"], max_concurrency_per_key=1)
    holder = _hold_request(gw, {"Authorization": "Bearer a"})
    assert fake.wait_for(lambda: len(fake.generates) == 1)
    with gw.client() as http:
        r = http.post(CHAT, json={"messages": MESSAGES}, headers={"Authorization": "Bearer a"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "too_many_concurrent_requests"
        fake.hang = False
        other = {"Authorization": "Bearer b"}
        body = {"messages": MESSAGES, "max_tokens": 2}
        assert http.post(CHAT, json=body, headers=other).status_code == 200
    holder.close()


def test_queued_request_runs_when_the_slot_frees(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(max_running_requests=1, max_queued_requests=4)
    holder = _hold_request(gw)
    assert fake.wait_for(lambda: len(fake.generates) == 1)
    fake.hang = False
    queued = RawRequest(gw.url, CHAT, {"messages": MESSAGES, "max_tokens": 2})
    with gw.client() as http:
        assert fake.wait_for(lambda: _queued(http) == 1)
        assert len(fake.generates) == 1  # still waiting in the gateway, not sent
        holder.close()
        response = queued.read_all()
    assert response.startswith(b"HTTP/1.1 200")
    assert len(fake.generates) == 2
    assert fake.generate_ids()[0] in fake.aborted_ids()


def test_client_leaving_the_queue_frees_its_place(
    start_gateway: Callable[..., RunningGateway], fake: FakeCoordinator
) -> None:
    fake.hang = True
    gw = start_gateway(max_running_requests=1, max_queued_requests=1)
    holder = _hold_request(gw)
    assert fake.wait_for(lambda: len(fake.generates) == 1)
    with gw.client() as http:
        leaver = RawRequest(gw.url, CHAT, {"messages": MESSAGES})
        assert fake.wait_for(lambda: _queued(http) == 1)
        leaver.close()
        assert fake.wait_for(lambda: _queued(http) == 0)
        # The queue slot is free again: a new request queues instead of a 503.
        waiting = RawRequest(gw.url, CHAT, {"messages": MESSAGES})
        assert fake.wait_for(lambda: _queued(http) == 1)
        waiting.close()
    holder.close()
    assert len(fake.generates) == 1  # neither queued request reached the coordinator


def _queued(http: httpx.Client) -> int:
    return int(http.get("/status").json()["gateway"]["queued"])
