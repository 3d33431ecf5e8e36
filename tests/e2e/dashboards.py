"""The metric names Grafana dashboards query: ours (deploy/grafana/layerbus.json) and vLLM's.

vLLM's example dashboard is vendored as the list of metric names its panels
query, from vllm-project/vllm examples/online_serving/prometheus_grafana/grafana.json
(commit 004f771f3a6b49597546b05c7d83686d1e121fa0; read with the vLLM 0.32 series
in mind, the version layerbus runs). Each name is either expected from layerbus
or excluded below with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERBUS_DASHBOARD = ROOT / "deploy" / "grafana" / "layerbus.json"

# A metric name in a PromQL expression, without the _bucket/_count/_sum of a histogram.
METRIC = re.compile(
    r"\b((?:vllm:|layerbus_)[a-z0-9_:]+?)(?:_bucket|_count|_sum)?\b(?=[\[{(),\s]|$)"
)

# Every metric the panels of vLLM's example dashboard query (histograms by base name).
VLLM_DASHBOARD = frozenset(
    {
        "vllm:e2e_request_latency_seconds",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_per_output_token_seconds",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds",
        "vllm:gpu_cache_usage_perc",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_success_total",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_max_num_generation_tokens",
    }
)

# Names of vLLM's dashboard that layerbus does not export, and why.
VLLM_EXCLUDED = {
    # vLLM's V1 engine (0.32, what layerbus runs) no longer exports it either: its
    # PrometheusStatLogger renamed it vllm:inter_token_latency_seconds (which layerbus
    # exports and deploy/grafana/layerbus.json queries).
    "vllm:time_per_output_token_seconds": "renamed by vLLM to vllm:inter_token_latency_seconds",
    # Likewise renamed in vLLM V1 (the cache is not only on GPUs): vllm:kv_cache_usage_perc.
    "vllm:gpu_cache_usage_perc": "renamed by vLLM to vllm:kv_cache_usage_perc",
}


def metric_names(expr: str) -> set[str]:
    """The vllm:/layerbus_ metric names in one PromQL expression."""
    return set(METRIC.findall(expr))


def layerbus_dashboard_metrics() -> set[str]:
    """Every metric a panel of deploy/grafana/layerbus.json queries."""
    dash = json.loads(LAYERBUS_DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return {name for expr in exprs for name in metric_names(expr)}


def base_names(scraped: set[str]) -> set[str]:
    """Scraped sample names plus the histogram/summary names they belong to."""
    return scraped | {re.sub(r"_(bucket|count|sum)$", "", n) for n in scraped}
