"""Helpers for the failure tests: greedy streams, waiting on /status, killing stages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from tests.e2e.cluster import Cluster

QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how bread is made.",
    "Describe a walk through a forest in autumn.",
    "What is the capital of France?",
    "List some facts about the moon.",
    "Why is the sky blue?",
    "Describe the life of a honey bee.",
    "Explain what a CPU does.",
]

# Fast failure detection for the tests: 0.5 s heartbeats, dead after 4 misses.
FAST_HEARTBEATS = {"LAYERBUS_HEARTBEAT_INTERVAL_S": "0.5", "LAYERBUS_HEARTBEAT_MISSES": "4"}


class StreamResult:
    """What one streamed chat completion delivered."""

    def __init__(self) -> None:
        self.text = ""
        self.finish = ""
        self.error: Any = None
        self.chunks = 0


async def stream_one(
    client: httpx.AsyncClient, url: str, question: str, max_tokens: int, out: StreamResult
) -> None:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            out.error = (resp.status_code, (await resp.aread()).decode())
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if "error" in chunk:
                out.error = chunk["error"]
                return
            for choice in chunk["choices"]:
                out.text += choice["delta"].get("content") or ""
                out.chunks += 1
                out.finish = choice.get("finish_reason") or out.finish


def run_streams(
    url: str,
    count: int,
    max_tokens: int,
    during: Callable[[list[StreamResult]], None] | None = None,
    after_chunks: int = 4,
) -> list[StreamResult]:
    """count greedy streams; `during` runs (in a thread) once every stream has some output."""

    async def main() -> list[StreamResult]:
        results = [StreamResult() for _ in range(count)]
        async with httpx.AsyncClient(timeout=600) as client:
            jobs = [
                asyncio.create_task(
                    stream_one(client, url, QUESTIONS[i % len(QUESTIONS)], max_tokens, r)
                )
                for i, r in enumerate(results)
            ]
            if during is not None:
                while not all(r.chunks >= after_chunks or r.error for r in results):
                    if all(j.done() for j in jobs):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(during, results)
            await asyncio.gather(*jobs)
        return results

    return asyncio.run(main())


def status(cluster: Cluster) -> dict[str, Any]:
    resp = httpx.get(cluster.url + "/status", timeout=10)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float = 180.0, every: float = 0.25
) -> None:
    """Poll until predicate() holds; the timeout only turns a hang into a failure message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, AssertionError, KeyError):
            pass
        time.sleep(every)
    raise AssertionError(f"gave up waiting for: {what}")


def healthy(cluster: Cluster) -> bool:
    return httpx.get(cluster.url + "/health", timeout=5).status_code == 200


def settled(cluster: Cluster, free_blocks: int) -> bool:
    """No request left anywhere, and every KV block free again."""
    st = status(cluster)
    coordinator = st["coordinator"]
    return (
        coordinator["num_running"] == 0
        and coordinator["num_waiting"] == 0
        and coordinator["num_free_blocks"] == free_blocks
        and all(s["num_requests"] == 0 for s in st["stages"] if s["state"] != "dead")
    )


def start_stage(
    cluster: Cluster, start: int, end: int, name: str, coordinator: str | None = None
) -> None:
    env = dict(cluster.env(), LAYERBUS_STAGE_THREADS="1")
    address = coordinator or cluster.coordinator
    args = ["stage", "--layers", f"{start}:{end}", "--coordinator", address]
    cluster.spawn(name, args + ["--name", name, "--kv-cache-gb", "0.25"], env)
