"""services/ops/prometheus_targets.py: /status -> Prometheus file-based discovery."""

from __future__ import annotations

from services.ops.prometheus_targets import file_sd, target_of

STATUS = {
    "gateway": {"metrics": "http://127.0.0.1:8000/metrics"},
    "coordinator": {"metrics": "http://coord:9100/metrics"},
    "stages": [
        {"name": "stage-0-15", "metrics": "http://hostA:9101/metrics"},
        {"name": "stage-15-30", "metrics": ""},
    ],
}


def test_target_of() -> None:
    assert target_of("http://hostA:9101/metrics") == "hostA:9101"
    assert target_of("http://[::1]:9100/metrics") == "[::1]:9100"
    assert target_of("") == ""


def test_every_service_with_metrics_is_a_target() -> None:
    assert file_sd(STATUS) == [
        {"targets": ["127.0.0.1:8000"], "labels": {"service": "gateway"}},
        {"targets": ["coord:9100"], "labels": {"service": "coordinator"}},
        {"targets": ["hostA:9101"], "labels": {"service": "stage", "stage": "stage-0-15"}},
    ]


def test_an_old_status_without_metrics_gives_no_targets() -> None:
    assert file_sd({"coordinator": {}, "stages": [{"name": "s"}]}) == []
