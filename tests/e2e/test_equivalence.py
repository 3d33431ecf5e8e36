"""Acceptance: layerbus returns the same greedy token ids as single-process vLLM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import Cluster

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


def check_equal(cluster: Cluster, prompt_ids: list[list[int]], baseline: list[list[int]]) -> None:
    for index, (prompt, expected) in enumerate(zip(prompt_ids, baseline, strict=True)):
        got = generate_ids(cluster, prompt)
        assert got == expected, f"prompt {index} ({len(prompt)} tokens) differs"


def test_two_stages_15_15_match_vllm(
    two_stages: Cluster, prompt_ids: list[list[int]], baseline_ids: list[list[int]]
) -> None:
    check_equal(two_stages, prompt_ids, baseline_ids)


@pytest.mark.parametrize(
    ("layers", "micro_batches"),
    [([(0, 30)], 1), ([(0, 15), (15, 30)], 1), ([(0, 4), (4, 24), (24, 30)], 4)],
    ids=["one-stage-M1", "two-stages-M1", "three-stages-4-20-6-M4"],
)
def test_other_splits_match_vllm(
    layers: list[tuple[int, int]],
    micro_batches: int,
    model_path: str,
    tmp_path: Path,
    prompt_ids: list[list[int]],
    baseline_ids: list[list[int]],
) -> None:
    env = {"LAYERBUS_MICRO_BATCHES": str(micro_batches)}
    cluster = Cluster(model=model_path, layers=layers, log_dir=tmp_path, env_extra=env)
    try:
        cluster.start()
        check_equal(cluster, prompt_ids, baseline_ids)
        status = httpx.get(cluster.url + "/status", timeout=10).json()
        assert status["coordinator"]["micro_batches"] == micro_batches
        stages = status["stages"]
        assert [(s["layer_start"], s["layer_end"]) for s in stages] == layers
        for stage, (start, end) in zip(stages, layers, strict=True):
            assert stage["layers_loaded"] == list(range(start, end))
        if len(layers) == 3:
            assert stages[1]["other_parameters"] == []  # no embeddings, norm or head
    finally:
        cluster.stop()
