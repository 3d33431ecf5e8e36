"""Fixtures that start real layerbus processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.default_model import prepare_default_model
from tests.e2e import last_use
from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.genconf import NAME, TOOL_ARGS, write_genconf_model
from tests.e2e.vllm_server import VllmServer

LONG_TEXT = " ".join(
    f"Paragraph {i}: the river runs past the mill, the miller counts sacks of grain, "
    "and the children watch the boats drift toward the sea."
    for i in range(30)
)

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colors of the rainbow.",
    "Explain what a CPU does in one sentence.",
    "Translate 'good morning' into Spanish.",
    "What is 12 plus 30?",
    "Give me a name for a friendly robot.",
    "Summarize this text in one sentence: " + LONG_TEXT,
]

# Modules that share a session-wide stack run one after the other (in this order, each
# right after the first), so the stack is stopped once the last of them is done.
SHARING = [("test_clients.py", "test_sampling_parameters.py")]
# Session-wide stacks stopped after their last test (tests/e2e/last_use.py).
STOPPED_AFTER_LAST_USE = ["genconf_reference", "genconf_two_stages", "healing", "two_stages"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for group in SHARING:
        moved = [i for i in items if i.path.name in group[1:]]
        kept = [i for i in items if i.path.name not in group[1:]]
        firsts = [n for n, i in enumerate(kept) if i.path.name == group[0]]
        if moved and firsts:
            at = firsts[-1] + 1
            items[:] = kept[:at] + moved + kept[at:]
    last_use.plan(items, STOPPED_AFTER_LAST_USE)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    last_use.finished(item)


@pytest.fixture(scope="session")
def model_path() -> str:
    return str(prepare_default_model())


@pytest.fixture(scope="session")
def tokenizer(model_path: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def prompt_ids(tokenizer) -> list[list[int]]:  # type: ignore[no-untyped-def]
    out = []
    for text in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    assert max(len(i) for i in out) > 600, "one prompt must be long enough to be chunked"
    return out


@pytest.fixture(scope="session")
def baseline_ids(
    model_path: str,
    prompt_ids: list[list[int]],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[list[int]]:
    """Greedy token ids from single-process vLLM, one prompt at a time.

    A test that also wants the session's `two_stages` gets it started while vLLM runs
    (the baseline uses one core), not after.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_CPU_OMP_THREADS_BIND="nobind")
    env["OMP_NUM_THREADS"] = "1"
    folder = tmp_path_factory.mktemp("baseline")
    (folder / "prompts.json").write_text(json.dumps(prompt_ids))
    # Files, not pipes: nothing blocks the child while the stack below starts.
    with (
        open(folder / "prompts.json", "rb") as stdin,
        open(folder / "stdout", "wb") as stdout,
        open(folder / "stderr", "wb") as stderr,
    ):
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("baseline_vllm.py")), model_path, "32"],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    try:
        if "two_stages" in request.fixturenames:
            request.getfixturevalue("two_stages")
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (folder / "stdout").read_text(errors="replace")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (folder / "stderr").read_text(errors="replace")[-3000:]
    result: list[list[int]] = json.loads(lines[-1][len("RESULT ") :])
    return result


@pytest.fixture(scope="session")
def two_stages(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        model=model_path,
        layers=[(0, 15), (15, 30)],
        log_dir=tmp_path_factory.mktemp("two-stages"),
    )
    last_use.STOPS["two_stages"] = cluster.stop
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def genconf_model(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled model with sampling values added to its generation_config.json."""
    return write_genconf_model(model_path, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def genconf_reference(
    genconf_model: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Single-process `vllm serve` of genconf_model, with the tool parser and template."""
    server = VllmServer(
        genconf_model,
        tmp_path_factory.mktemp("vllm-serve"),
        ["--served-model-name", NAME, *TOOL_ARGS],
    )
    last_use.STOPS["genconf_reference"] = server.stop
    try:
        # Every test of the reference also runs on the two-stage stack: start it meanwhile.
        server.launch()
        request.getfixturevalue("genconf_two_stages")
        yield server.wait_ready().url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def genconf_two_stages(
    genconf_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """layerbus over genconf_model, layers 0:15 and 15:30, the gateway with the tool flags."""
    cluster = Cluster(
        model=genconf_model,
        layers=[(0, 15), (15, 30)],
        log_dir=tmp_path_factory.mktemp("genconf-two-stages"),
        gateway_args=TOOL_ARGS,
    )
    last_use.STOPS["genconf_two_stages"] = cluster.stop
    try:
        yield cluster.start()
    finally:
        cluster.stop()
