"""Prometheus metrics: requests by route and status, tokens, errors, TTFT."""

from __future__ import annotations

import re
import time

import httpx

from tests.unit.gateway.fake_coordinator import FakeCoordinator

MESSAGES = [{"role": "user", "content": "hi"}]


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_requests_tokens_errors_and_ttft(
    http: httpx.Client, fake: FakeCoordinator
) -> None:
    http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4})
    http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True})
    http.post("/v1/chat/completions", json={"messages": MESSAGES, "temperature": 9})
    http.get("/no/such/route")
    fake.fail_with = "boom"
    http.post("/v1/completions", json={"prompt": "x", "stream": True})

    p = "layerbus_gateway"
    # A stream's bookkeeping finishes just after its last byte; wait (bounded) for it. On a
    # busy machine that can take a while: up to 2000 polls.
    for _ in range(2000):
        r = http.get("/metrics")
        text = r.text
        settled = sample(text, f"{p}_requests_running") == 0
        completions = sample(text, f"{p}_requests_total", 'route="/v1/completions",status="200"')
        if (
            settled
            and completions == 2
            and sample(text, f"{p}_errors_total", 'status="503"') == 1
            and sample(text, f"{p}_time_to_first_token_seconds_count") == 2
        ):
            break
        time.sleep(0.025)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    chat = 'route="/v1/chat/completions",status="200"'
    assert sample(text, f"{p}_requests_total", chat) == 1
    assert sample(text, f"{p}_requests_total", 'route="/v1/completions",status="200"') == 2
    assert sample(text, f"{p}_requests_total", 'route="other",status="404"') == 1
    assert sample(text, f"{p}_errors_total", 'status="400"') == 1
    assert sample(text, f"{p}_errors_total", 'status="404"') == 1
    assert sample(text, f"{p}_errors_total", 'status="503"') == 1  # the in-stream error
    assert sample(text, f"{p}_generation_tokens_total") == 6
    assert sample(text, f"{p}_prompt_tokens_total") > 0
    assert sample(text, f"{p}_time_to_first_token_seconds_count") == 2
    assert sample(text, f"{p}_requests_running") == 0
    assert sample(text, f"{p}_coordinator_ready") == 1
