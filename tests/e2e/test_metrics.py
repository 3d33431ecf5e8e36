"""Issue 9 (metrics): coordinator and stages export vLLM's and layerbus's metrics.

One cluster (two stages, each service with --metrics-port); a few completions
through the gateway, then /metrics of the coordinator and of each stage. Then a
real Prometheus server, its targets taken from /status, scrapes every service
(acceptance 1) and has every metric the dashboards query (acceptance 2).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import Cluster, free_port
from tests.e2e.dashboards import (
    VLLM_DASHBOARD,
    VLLM_EXCLUDED,
    base_names,
    layerbus_dashboard_metrics,
)
from tests.e2e.prometheus import Prometheus, prometheus_binary, write_targets

pytestmark = pytest.mark.e2e

LAYERS = [(0, 15), (15, 30)]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Metered:
    """The running cluster and the metrics port of each service."""

    def __init__(self, cluster: Cluster, ports: dict[str, int]) -> None:
        self.cluster = cluster
        self.ports = ports

    def scrape(self, service: str) -> Samples:
        url = f"http://127.0.0.1:{self.ports[service]}/metrics"
        text = httpx.get(url, timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of name's samples whose labels include labels; KeyError if there is none."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    if not found:
        raise KeyError(f"{name}{labels} is not exported")
    return sum(found)


@pytest.fixture(scope="module")
def metered(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    ports = {"coordinator": free_port()}
    ports.update({f"stage-{a}-{b}": free_port() for a, b in LAYERS})
    cluster = Cluster(
        model=model_path,
        layers=LAYERS,
        log_dir=tmp_path_factory.mktemp("metrics"),
        coordinator_args=["--metrics-port", str(ports["coordinator"])],
        stage_args=[["--metrics-port", str(ports[f"stage-{a}-{b}"])] for a, b in LAYERS],
    )
    try:
        cluster.start()
        yield Metered(cluster, ports)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def usage(metered: Metered) -> dict[str, int]:
    """Token counts of the completions sent (greedy, a fixed number of tokens each)."""
    prompts = ["The capital of France is", "One, two, three, four,"]
    used = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    for prompt in prompts:
        body = {
            "prompt": prompt,
            "max_tokens": 12,
            "temperature": 0,
            "ignore_eos": True,
        }
        reply = httpx.post(f"{metered.cluster.url}/v1/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        for key in ("prompt_tokens", "completion_tokens"):
            used[key] += reply.json()["usage"][key]
        used["requests"] += 1
    return used


def test_coordinator_exports_vllms_request_metrics(metered: Metered, usage: dict[str, int]) -> None:
    m = metered.scrape("coordinator")
    assert total(m, "vllm:generation_tokens_total") == usage["completion_tokens"] == 24
    assert total(m, "vllm:prompt_tokens_total") == usage["prompt_tokens"]
    assert total(m, "vllm:request_success_total", finished_reason="length") == 2
    assert total(m, "vllm:time_to_first_token_seconds_count") == usage["requests"]
    assert total(m, "vllm:e2e_request_latency_seconds_count") == usage["requests"]
    # 12 tokens each: 11 inter-token gaps per request.
    assert total(m, "vllm:inter_token_latency_seconds_count") == 22
    assert total(m, "vllm:e2e_request_latency_seconds_sum") > 0
    assert total(m, "vllm:num_requests_running") == 0
    assert total(m, "vllm:num_requests_waiting") == 0
    assert 0 <= total(m, "vllm:kv_cache_usage_perc") <= 1
    assert total(m, "vllm:num_preemptions_total") == 0
    assert total(m, "vllm:prefix_cache_queries_total") >= total(m, "vllm:prefix_cache_hits_total")
    labels = {dict(ls).get("engine") for (n, ls) in m if n == "vllm:num_requests_running"}
    assert labels == {"0"}


def test_coordinator_exports_pipeline_metrics(metered: Metered, usage: dict[str, int]) -> None:
    m = metered.scrape("coordinator")
    steps = total(m, "layerbus_coordinator_steps_total")
    # At least one step per generated token of the longest request.
    assert steps >= 12
    assert 0 <= total(m, "layerbus_coordinator_empty_steps_total") <= steps
    assert total(m, "layerbus_coordinator_batches_in_flight") >= 0
    assert total(m, "layerbus_coordinator_chain_generation") > 0
    assert total(m, "layerbus_coordinator_recoveries_total") == 0
    assert total(m, "layerbus_coordinator_stages", state="configured", role="active") == 2
    assert total(m, "layerbus_coordinator_stages", role="standby") == 0


@pytest.mark.parametrize(("start", "end"), LAYERS)
def test_each_stage_exports_its_step_metrics(
    metered: Metered, usage: dict[str, int], start: int, end: int
) -> None:
    name = f"stage-{start}-{end}"
    labels = {"stage": name, "layers": f"{start}:{end}"}
    coordinator_steps = total(metered.scrape("coordinator"), "layerbus_coordinator_steps_total")
    m = metered.scrape(name)
    for _ in range(20):  # the hop thread observes a send once ZMQ has written it
        if total(m, "layerbus_stage_hop_seconds_count", **labels) >= coordinator_steps:
            break
        time.sleep(0.25)
        m = metered.scrape(name)
    steps = total(m, "layerbus_stage_steps_total", **labels)
    assert steps == coordinator_steps
    assert total(m, "layerbus_stage_forward_seconds_count", **labels) == steps
    assert total(m, "layerbus_stage_forward_seconds_sum", **labels) > 0
    assert total(m, "layerbus_stage_hop_seconds_count", **labels) == steps
    assert total(m, "layerbus_stage_queue_depth", **labels) == 0
    bytes_in = total(m, "layerbus_stage_activation_bytes_total", **labels, direction="in")
    bytes_out = total(m, "layerbus_stage_activation_bytes_total", **labels, direction="out")
    assert bytes_in > 0 and bytes_out > 0
    if start > 0:
        # Hidden states of every prompt token arrived from the stage before.
        assert bytes_in > usage["prompt_tokens"] * 576 * 2
    if end < 30:
        assert bytes_out > usage["prompt_tokens"] * 576 * 2


def test_status_lists_the_metrics_url_dtype_and_max_model_len_of_every_service(
    metered: Metered,
) -> None:
    status = httpx.get(f"{metered.cluster.url}/status", timeout=10).json()
    port = metered.ports["coordinator"]
    assert status["coordinator"]["metrics"] == f"http://127.0.0.1:{port}/metrics"
    assert status["gateway"]["metrics"] == f"{metered.cluster.url}/metrics"
    listed = {s["name"]: s["metrics"] for s in status["stages"]}
    assert listed == {
        name: f"http://127.0.0.1:{port}/metrics"
        for name, port in metered.ports.items()
        if name != "coordinator"
    }
    # The engine shape each process actually runs (the CPU default is float32).
    assert status["coordinator"]["dtype"] == "float32"
    assert {(s["dtype"], s["max_model_len"]) for s in status["stages"]} == {("float32", 2048)}


# ------------------------------------------------ a real Prometheus server (issue 9, 1 and 2)


@pytest.fixture(scope="module")
def prometheus(metered: Metered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Debian's prometheus scraping the services /status lists, every second."""
    binary = prometheus_binary()
    if binary is None:
        pytest.skip("no prometheus binary: `make test` installs Debian's `prometheus` package")
    workdir = tmp_path_factory.mktemp("prometheus")
    targets = workdir / "targets.json"
    entries = write_targets(metered.cluster.url, targets)
    assert sorted(e["labels"]["service"] for e in entries) == [
        "coordinator",
        "gateway",
        "stage",
        "stage",
    ]
    server = Prometheus.start(binary, workdir, targets)
    try:
        yield server
    finally:
        server.stop()


def scrape_health(prom: Prometheus) -> dict[str, str]:
    """Target address -> health ("up", "down", "unknown") of every active target."""
    targets = prom.api("targets", state="active")["activeTargets"]
    return {t["scrapeUrl"]: t["health"] for t in targets}


def test_prometheus_scrapes_every_service(metered: Metered, prometheus: Prometheus) -> None:
    status = httpx.get(f"{metered.cluster.url}/status", timeout=10).json()
    wanted = {status["gateway"]["metrics"], status["coordinator"]["metrics"]}
    wanted |= {s["metrics"] for s in status["stages"]}
    assert len(wanted) == 4

    def all_up() -> dict[str, str] | None:
        health = scrape_health(prometheus)
        return health if set(health) == wanted and set(health.values()) == {"up"} else None

    prometheus.poll("every service scraped and up", 120, all_up)


def test_promql_answers_request_rate_ttft_kv_usage_and_stage_step_time(
    metered: Metered, prometheus: Prometheus
) -> None:
    # Requests after Prometheus has scraped everything once, so rates see them.
    test_prometheus_scrapes_every_service(metered, prometheus)
    for prompt in ["Name three rivers.", "Count to five:", "Hello"]:
        body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        reply = httpx.post(f"{metered.cluster.url}/v1/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text

    def positive(expr: str, series: int = 1) -> Any:
        def check() -> list[dict[str, Any]] | None:
            result = prometheus.query(expr)
            values = [float(r["value"][1]) for r in result]
            good = len(result) == series and all(v > 0 and v < float("inf") for v in values)
            return result if good else None

        return prometheus.poll(expr, 120, check)

    positive("sum(rate(vllm:request_success_total[1m]))")
    positive("sum(rate(layerbus_gateway_requests_total[1m]))")
    positive(
        "histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))"
    )
    kv = prometheus.query("vllm:kv_cache_usage_perc")
    assert len(kv) == 1 and 0 <= float(kv[0]["value"][1]) <= 1, kv
    # The model_name label vLLM's own dashboard selects on.
    assert kv[0]["metric"].get("model_name"), kv
    steps = positive(
        "sum by (stage) (rate(layerbus_stage_forward_seconds_sum[1m]))"
        " / sum by (stage) (rate(layerbus_stage_forward_seconds_count[1m]))",
        series=len(LAYERS),
    )
    assert {r["metric"]["stage"] for r in steps} == {f"stage-{a}-{b}" for a, b in LAYERS}


def test_every_dashboard_metric_is_scraped(metered: Metered, prometheus: Prometheus) -> None:
    test_prometheus_scrapes_every_service(metered, prometheus)
    scraped = base_names(set(prometheus.api("label/__name__/values")))
    assert layerbus_dashboard_metrics() - scraped == set()
    assert set(VLLM_EXCLUDED) <= VLLM_DASHBOARD
    assert (VLLM_DASHBOARD - set(VLLM_EXCLUDED)) - scraped == set()
