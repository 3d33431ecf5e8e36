"""Acceptance: concurrency, layer placement and a known answer through the gateway."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.e2e

# Prompts whose greedy answers the default model gets right, with a word the answer contains.
KNOWN = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of the United Kingdom?", "London"),
]


def test_chat_answers_paris(two_stages: Cluster) -> None:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 32,
    }
    resp = httpx.post(two_stages.url + "/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    answer = resp.json()["choices"][0]["message"]["content"]
    assert "Paris" in answer


async def stream_chat(client: httpx.AsyncClient, url: str, question: str) -> tuple[str, str]:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
    }
    text, finish = "", ""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
    return text, finish


def test_32_concurrent_streams_complete_with_two_batches_in_flight(two_stages: Cluster) -> None:
    async def run() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=600) as client:
            jobs = [
                stream_chat(client, two_stages.url, KNOWN[i % len(KNOWN)][0]) for i in range(32)
            ]
            return await asyncio.gather(*jobs)

    results = asyncio.run(run())
    for i, (text, finish) in enumerate(results):
        expected = KNOWN[i % len(KNOWN)][1]
        assert finish in ("stop", "length")
        assert expected.lower() in text.lower(), f"request {i}: {text!r}"
    status = httpx.get(two_stages.url + "/status", timeout=10).json()
    assert status["coordinator"]["max_batches_in_flight"] >= 2


def test_each_stage_holds_only_its_layers(two_stages: Cluster) -> None:
    status = httpx.get(two_stages.url + "/status", timeout=10).json()
    first, last = status["stages"]
    assert first["layers_loaded"] == list(range(0, 15))
    assert last["layers_loaded"] == list(range(15, 30))
    assert first["other_parameters"] == ["model.embed_tokens.weight"]
    # The last stage applies the final norm; lm_head is tied to the embeddings.
    assert last["other_parameters"] == ["model.embed_tokens.weight", "model.norm.weight"]
    assert status["coordinator"]["coordinator_parameters"] == 0
