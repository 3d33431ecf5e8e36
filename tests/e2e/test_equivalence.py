"""Acceptance: layerbus returns the same greedy token ids as single-process vLLM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.stack_cache import StackCache

pytestmark = pytest.mark.e2e


def generate_ids(cluster: Cluster, prompt: list[int]) -> list[int]:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "prompt": prompt,
        "max_tokens": 32,
        "temperature": 0,
        "return_token_ids": True,
    }
    resp = httpx.post(cluster.url + "/v1/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    return list(choice["token_ids"])


async def generate_ids_async(
    client: httpx.AsyncClient, cluster: Cluster, prompt: list[int]
) -> list[int]:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "prompt": prompt,
        "max_tokens": 32,
        "temperature": 0,
        "return_token_ids": True,
    }
    resp = await client.post(cluster.url + "/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["choices"][0]["token_ids"])


def generate_concurrently(cluster: Cluster, prompts: list[list[int]]) -> list[list[int]]:
    """Every prompt at once: they share steps and micro-batches, tokens travel the ring."""

    async def main() -> list[list[int]]:
        async with httpx.AsyncClient(timeout=600) as client:
            jobs = [generate_ids_async(client, cluster, p) for p in prompts]
            return list(await asyncio.gather(*jobs))

    return asyncio.run(main())


def check_equal(cluster: Cluster, prompt_ids: list[list[int]], baseline: list[list[int]]) -> None:
    for index, (prompt, expected) in enumerate(zip(prompt_ids, baseline, strict=True)):
        got = generate_ids(cluster, prompt)
        assert got == expected, f"prompt {index} ({len(prompt)} tokens) differs"


def test_two_stages_15_15_match_vllm(
    prompt_ids: list[list[int]], baseline_ids: list[list[int]], two_stages: Cluster
) -> None:  # baseline_ids first: it starts two_stages while the baseline runs
    check_equal(two_stages, prompt_ids, baseline_ids)


# The three-stage stack serves the concurrent test first (a cold prefix cache, so the long
# prompt's chunked prefill runs beside the others) and then the one-at-a-time test; every
# other topology here is started once. The session's `two_stages` runs the default M.
THREE_STAGES = [(0, 4), (4, 24), (24, 30)]


@pytest.fixture(scope="module")
def stacks() -> Iterator[StackCache]:
    cache = StackCache()
    try:
        yield cache
    finally:
        cache.close()


def stack(
    stacks: StackCache, model_path: str, log_dir: Path, layers: list[tuple[int, int]], m: int
) -> AbstractContextManager[Cluster]:
    """The running stack of these layers with M fixed at `m` (reused from the last test)."""
    env = {"LAYERBUS_MICRO_BATCHES": str(m)}
    return stacks.use(
        (tuple(layers), m),
        lambda: Cluster(model=model_path, layers=layers, log_dir=log_dir, env_extra=env),
    )


@pytest.mark.parametrize(
    ("layers", "micro_batches"),
    [([(0, 15), (15, 30)], 2), (THREE_STAGES, 4)],
    ids=["two-stages-M2", "three-stages-4-20-6-M4"],
)
def test_concurrent_requests_match_vllm(
    layers: list[tuple[int, int]],
    micro_batches: int,
    stacks: StackCache,
    model_path: str,
    tmp_path: Path,
    prompt_ids: list[list[int]],
    baseline_ids: list[list[int]],
) -> None:
    with stack(stacks, model_path, tmp_path, layers, micro_batches) as cluster:
        got = generate_concurrently(cluster, prompt_ids)
        for index, (ids, expected) in enumerate(zip(got, baseline_ids, strict=True)):
            assert ids == expected, f"prompt {index} ({len(prompt_ids[index])} tokens) differs"
        coordinator = httpx.get(cluster.url + "/status", timeout=10).json()["coordinator"]
        assert coordinator["micro_batches"] == micro_batches
        # The prompts really ran side by side: several micro-batches were in flight.
        assert coordinator["max_batches_in_flight"] >= 2, coordinator


@pytest.mark.parametrize(
    ("layers", "micro_batches"),
    [(THREE_STAGES, 4), ([(0, 15), (15, 30)], 1), ([(0, 30)], 1)],
    ids=["three-stages-4-20-6-M4", "two-stages-M1", "one-stage-M1"],
)
def test_other_splits_match_vllm(
    layers: list[tuple[int, int]],
    micro_batches: int,
    stacks: StackCache,
    model_path: str,
    tmp_path: Path,
    prompt_ids: list[list[int]],
    baseline_ids: list[list[int]],
) -> None:
    with stack(stacks, model_path, tmp_path, layers, micro_batches) as cluster:
        check_equal(cluster, prompt_ids, baseline_ids)
        status = httpx.get(cluster.url + "/status", timeout=10).json()
        assert status["coordinator"]["micro_batches"] == micro_batches
        stages = status["stages"]
        assert [(s["layer_start"], s["layer_end"]) for s in stages] == layers
        for stage, (start, end) in zip(stages, layers, strict=True):
            assert stage["layers_loaded"] == list(range(start, end))
        if len(layers) == 3:
            assert stages[1]["other_parameters"] == []  # no embeddings, norm or head
