"""deploy/grafana/layerbus.json: valid panels whose metrics are the documented contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "layerbus.json"
DOCS = ROOT / "docs" / "deploy.md"
METRIC = re.compile(
    r"\b((?:vllm:|layerbus_)[a-z0-9_:]+?)(?:_bucket|_count|_sum)?\b(?=[\[{(),\s]|$)"
)
VLLM_DASHBOARD_NAMES = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:num_preemptions_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
}


def queried() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return {m for e in exprs for m in METRIC.findall(e)}


def test_every_panel_has_a_query_and_a_unique_id() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_vllms_names() -> None:
    assert queried() >= VLLM_DASHBOARD_NAMES


def test_every_queried_metric_is_documented() -> None:
    documented = set(re.findall(r"`((?:vllm:|layerbus_)[a-z0-9_:]+)`", DOCS.read_text()))
    assert queried() - documented == set()


def test_every_queried_layerbus_metric_has_an_exporter() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    import services.stage.metrics as stage_metrics
    from services.coordinator.metrics import PipelineView, register, stage_counts
    from shared.dropped import drop

    registry = CollectorRegistry()
    register(lambda: PipelineView(0, 0, 0, 0, 0, stage_counts([])), registry)
    stage_metrics.StageMetrics("dashboard-test", 0, 1).step(0.0, [])
    drop("dashboard-test", "test", "dashboard test")
    exported = generate_latest(registry).decode() + generate_latest().decode()
    samples = set(re.findall(r"^(layerbus_\w+)", exported, re.MULTILINE))
    full = samples | {re.sub(r"_(bucket|count|sum)$", "", n) for n in samples}
    wanted = {m for m in queried() if m.startswith("layerbus_") and "gateway" not in m}
    assert wanted - full == set()
