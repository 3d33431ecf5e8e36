"""Issue 16: `layerbus serve --load-format dummy` serves a config-only model folder.

The folder (benchmark/model_shapes.py, the tiny shape) holds config.json and the
tokenizer, no weight file: the flag has to reach the coordinator and both stages (a stage
reading weights would fail on the missing file; a stage with another load format would
be refused for its fingerprint).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmark.model_shapes import WEIGHT_SUFFIXES, write_shape
from tests.e2e.cluster import ROOT, free_port, stop_group

pytestmark = pytest.mark.e2e

NAME = "config-only"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`layerbus serve --load-format dummy` over a folder with no weights."""
    root = tmp_path_factory.mktemp("dummy")
    model = write_shape("tiny", root / "model")
    assert (model / "config.json").is_file()
    assert not [p for p in model.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    port = free_port()
    log = root / "serve.log"
    argv = [sys.executable, "-m", "services.ops.cli", "serve", "--model", str(model)]
    argv += ["--port", str(port), "--coordinator-port", str(free_port())]
    argv += ["--load-format", "dummy", "--kv-cache-gb", "0.25", "--metrics-port", "0"]
    argv += ["--served-model-name", NAME]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while "layerbus ready: " not in log.read_text(errors="replace"):
            text = log.read_text(errors="replace")
            assert proc.poll() is None, f"layerbus serve exited:\n{text[-3000:]}"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}", log
    finally:
        stop_group(proc)


def test_config_only_folder_answers_a_completion(served: tuple[str, Path]) -> None:
    url, _ = served
    body = {
        "model": NAME,
        "prompt": "The capital of France is",
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": True,  # random weights may well pick the end token first
    }
    resp = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["finish_reason"] == "length"
    status = httpx.get(f"{url}/status", timeout=10).json()
    assert len(status["stages"]) == 2
