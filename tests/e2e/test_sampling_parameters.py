"""The vLLM sampling parameters beyond OpenAI's: each changes the output as `vllm serve` does.

logit_bias, allowed_token_ids and bad_words act in the last stage's sampler (the
coordinator fills vLLM's SamplingParams; bad_words are tokenized with the engine's
tokenizer); include_stop_str_in_output and skip_special_tokens act in the gateway's
detokenizer and stop strings.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.genconf import NAME

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
IM_START = 1  # a special token of the bundled model that is neither EOS nor a stop


@pytest.fixture(scope="module")
def stack(genconf_two_stages: Cluster) -> Cluster:
    """Two stages over the bundled model (its generation_config.json with sampling defaults,
    which these requests override: they all set temperature 0), shared with test_clients.py."""
    return genconf_two_stages


@pytest.fixture(scope="module")
def reference(genconf_reference: str) -> str:
    """`vllm serve` of the same folder, as test_clients.py compares with."""
    return genconf_reference


def complete(url: str, model: str, **fields: Any) -> dict[str, Any]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, **fields}
    resp = httpx.post(url + "/v1/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    choice: dict[str, Any] = resp.json()["choices"][0]
    return choice


def both(cluster: Cluster, reference: str, **fields: Any) -> str:
    """The text layerbus answers, after checking vllm serve answers the same."""
    ours = complete(cluster.url, NAME, **fields)
    theirs = complete(reference, NAME, **fields)
    assert ours["text"] == theirs["text"], f"{fields}: layerbus {ours!r}, vllm {theirs!r}"
    return str(ours["text"])


def first_token(tokenizer: Any, text: str) -> int:
    return int(tokenizer.encode(text, add_special_tokens=False)[0])


def test_logit_bias_changes_the_answer_as_vllm(
    stack: Cluster, reference: str, tokenizer: Any
) -> None:
    plain = both(stack, reference)
    banned = first_token(tokenizer, plain)
    biased = both(stack, reference, logit_bias={str(banned): -100})
    assert biased != plain and not biased.startswith(tokenizer.decode([banned]))


def test_allowed_token_ids_limit_the_answer_as_vllm(
    stack: Cluster, reference: str, tokenizer: Any
) -> None:
    allowed = tokenizer.encode(" Lyon Rome, and", add_special_tokens=False)
    text = both(stack, reference, allowed_token_ids=allowed)
    assert text and set(tokenizer.encode(text, add_special_tokens=False)) <= set(allowed)


def test_bad_words_change_the_answer_as_vllm(stack: Cluster, reference: str) -> None:
    plain = both(stack, reference)
    word = plain.split()[0]
    text = both(stack, reference, bad_words=[word])
    assert text != plain and word not in text.split()[:1]


def test_include_stop_str_in_output_keeps_the_stop_as_vllm(stack: Cluster, reference: str) -> None:
    plain = both(stack, reference)
    stop = plain.split()[1]
    cut = both(stack, reference, stop=[stop])
    kept = both(stack, reference, stop=[stop], include_stop_str_in_output=True)
    assert kept == cut + stop


def test_skip_special_tokens_false_shows_them_as_vllm(stack: Cluster, reference: str) -> None:
    forced = {"logit_bias": {str(IM_START): 100}, "max_tokens": 3}
    assert both(stack, reference, **forced) == ""
    shown = both(stack, reference, skip_special_tokens=False, **forced)
    assert shown == "<|im_start|>" * 3
