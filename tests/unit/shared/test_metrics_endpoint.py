"""shared/metrics_endpoint.py: default ports, fallback past taken ports, scrape URLs."""

from __future__ import annotations

import errno
import logging
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from shared import metrics_endpoint
from shared.metrics_endpoint import (
    AdvertiseError,
    MetricsPortError,
    bind_first_free,
    candidate_ports,
    metrics_url,
    parse_advertise,
    scrape_host,
    serve_metrics,
)

PROM_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_candidates_are_the_port_and_the_ones_after_it() -> None:
    assert candidate_ports(9100, 4) == [9100, 9101, 9102, 9103]
    assert candidate_ports(65534, 4) == [65534, 65535]


def test_a_taken_port_moves_to_the_next_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tried: list[int] = []

    def start(port: int) -> None:
        tried.append(port)
        if port < 9102:
            raise OSError(errno.EADDRINUSE, "Address already in use")

    with caplog.at_level(logging.INFO, logger="layerbus.metrics"):
        assert bind_first_free([9100, 9101, 9102, 9103], start, "stage") == 9102
    assert tried == [9100, 9101, 9102]
    assert "metrics port 9100 is taken" in caplog.text
    assert "metrics on port 9102 (9100 was taken)" in caplog.text


def test_every_port_taken_gives_none() -> None:
    def start(port: int) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")

    assert bind_first_free([1, 2], start, "stage") is None


def test_other_bind_errors_are_not_swallowed() -> None:
    def start(port: int) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    with pytest.raises(OSError):
        bind_first_free([1, 2], start, "stage")


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket (taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_serve_metrics_skips_a_port_in_use(listening: int) -> None:
    port = serve_metrics(listening, "127.0.0.1", "stage")
    assert listening < port < listening + metrics_endpoint.FALLBACK_PORTS
    url = metrics_url(port, "127.0.0.1")
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert b"python_gc_objects_collected_total" in reply.read()


def test_explicit_port_with_no_free_one_names_the_setting(
    listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_endpoint, "FALLBACK_PORTS", 1)
    monkeypatch.setattr(metrics_endpoint, "candidate_ports", lambda port, count=1: [port])
    with pytest.raises(MetricsPortError, match="--metrics-port"):
        serve_metrics(listening, "127.0.0.1", "stage")


def test_default_port_with_no_free_one_runs_without_metrics(
    listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(metrics_endpoint.DEFAULT_PORTS, "stage", listening)
    monkeypatch.setattr(metrics_endpoint, "candidate_ports", lambda port, count=1: [port])
    assert serve_metrics(None, "127.0.0.1", "stage") == 0


def test_zero_is_off() -> None:
    assert serve_metrics(0, "127.0.0.1", "stage") == 0
    assert metrics_url(0, "127.0.0.1") == ""


def test_defaults_are_distinct_per_service() -> None:
    assert metrics_endpoint.DEFAULT_PORTS == {"coordinator": 9100, "stage": 9101}


def test_scrape_host_is_the_metrics_host_unless_it_is_a_wildcard() -> None:
    assert scrape_host("10.0.0.5", "tcp://hostA:6000") == "10.0.0.5"
    assert scrape_host("0.0.0.0", "tcp://hosta:6000") == "hosta"
    assert scrape_host("0.0.0.0", "tcp://0.0.0.0:6000") == socket.gethostname()
    assert scrape_host("::", "") == socket.gethostname()


def test_metrics_url() -> None:
    assert metrics_url(9101, "0.0.0.0", "tcp://stage-1:6000") == "http://stage-1:9101/metrics"
    assert metrics_url(9100, "::1") == "http://[::1]:9100/metrics"


def test_a_wildcard_coordinator_without_advertise_reports_the_host_name() -> None:
    # Documented default: both the metrics host and the bind address are wildcards.
    url = metrics_url(9100, "0.0.0.0", "tcp://0.0.0.0:5555")
    assert url == f"http://{socket.gethostname()}:9100/metrics"


@pytest.mark.parametrize(
    ("advertise", "url"),
    [
        ("203.0.113.7:19100", "http://203.0.113.7:19100/metrics"),  # NAT: host and port
        ("coordinator.example", "http://coordinator.example:9100/metrics"),  # bound port
        ("[2001:db8::1]:19100", "http://[2001:db8::1]:19100/metrics"),
        ("[2001:db8::1]", "http://[2001:db8::1]:9100/metrics"),
    ],
)
def test_metrics_advertise_wins_over_metrics_host_and_bound_port(advertise: str, url: str) -> None:
    assert metrics_url(9100, "0.0.0.0", "tcp://0.0.0.0:5555", advertise) == url
    assert metrics_url(9100, "10.0.0.5", "tcp://stage-1:6000", advertise) == url


def test_metrics_advertise_does_not_turn_metrics_on() -> None:
    assert metrics_url(0, "0.0.0.0", "", "203.0.113.7:19100") == ""


@pytest.mark.parametrize(
    "bad",
    ["http://h:9100/metrics", "2001:db8::1", "h:99999", "h:port", "0.0.0.0:9100", "h:0", ":9100"],
)
def test_a_bad_metrics_advertise_names_the_setting(bad: str) -> None:
    with pytest.raises(AdvertiseError, match="LAYERBUS_METRICS_ADVERTISE"):
        parse_advertise(bad)


def test_vllm_names_keep_their_colon_whatever_the_scraper_asks_for() -> None:
    from prometheus_client import Gauge

    Gauge("layerbus_test:colon_name", "a vllm:-style name", registry=REGISTRY).set(1)
    port = serve_metrics(free_port(), "127.0.0.1", "stage")
    # What Prometheus 2.x sends: it prefers OpenMetrics, without UTF-8 names.
    request = urllib.request.Request(
        metrics_url(port, "127.0.0.1"), headers={"Accept": PROM_ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        text = reply.read().decode()
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "\nlayerbus_test:colon_name 1.0\n" in text
