"""Where a coordinator's or stage's Prometheus exporter listens, and the URL to scrape it at.

Metrics are on by default: the coordinator on 9100, a stage on 9101. Several
stages often share a host, so a taken port is not an error: the exporter takes
the next free one of `FALLBACK_PORTS` ports and logs which port was taken;
/status then lists the URL actually served (`metrics`), or the one
`--metrics-advertise` names (a NAT or a container's published port). Only when every port
of that range is taken does a service give up: with the default it runs
without metrics and says so, with an explicit `--metrics-port` it refuses to
start (the error names the setting).

The exporter always answers in Prometheus' text format (0.0.4), whatever the
scraper's Accept header asks for: prometheus_client 0.26's OpenMetrics output
rewrites the ':' of `vllm:*` sample names to '_' for a scraper that does not ask
for UTF-8 names (Prometheus 2.x), and vLLM's dashboards query `vllm:*`.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("layerbus.metrics")

DEFAULT_PORTS = {"coordinator": 9100, "stage": 9101}
FALLBACK_PORTS = 16  # the chosen port and the 15 after it
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*", "[::]"})


class MetricsPortError(RuntimeError):
    """No free metrics port in the range that starts at the configured one."""


def candidate_ports(port: int, count: int = FALLBACK_PORTS) -> list[int]:
    """The ports tried in order: port, port+1, ... (never past 65535)."""
    return [p for p in range(port, port + count) if p <= 65535]


def bind_first_free(ports: list[int], start: Callable[[int], object], service: str) -> int | None:
    """Call start(port) for each port until one is not in use; that port, or None.

    start raises OSError(EADDRINUSE) for a taken port; any other error is raised.
    """
    for port in ports:
        try:
            start(port)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            log.warning("%s: metrics port %d is taken; trying %d", service, port, port + 1)
            continue
        if port != ports[0]:
            log.info("%s: metrics on port %d (%d was taken)", service, port, ports[0])
        return port
    return None


class _Server(ThreadingMixIn, WSGIServer):
    """The exporter's HTTP server; one daemon thread per scrape."""

    daemon_threads = True


class _Server6(_Server):
    """The exporter's HTTP server on an IPv6 address."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


def text_format_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI app that answers as if the scraper asked for no particular format (text 0.0.4)."""

    def text_only(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return app({k: v for k, v in environ.items() if k != "HTTP_ACCEPT"}, start_response)

    return text_only


def start_exporter(port: int, host: str) -> WSGIServer:
    """Serve the default registry on host:port from a daemon thread (OSError if taken)."""
    from prometheus_client import make_wsgi_app

    server_cls = _Server6 if ":" in host else _Server
    app = text_format_only(make_wsgi_app())
    server = make_server(host, port, app, server_cls, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server


def serve_metrics(port: int | None, host: str, service: str) -> int:
    """Start this process's exporter; the port it listens on (0 = metrics off).

    port None = the service's default (DEFAULT_PORTS), 0 = off.
    """
    if port == 0:
        return 0
    explicit = port is not None
    first = port if port is not None else DEFAULT_PORTS[service]
    ports = candidate_ports(first)
    bound = bind_first_free(ports, lambda p: start_exporter(p, host), service)
    if bound is not None:
        return bound
    where = f"{host}:{ports[0]}-{ports[-1]}"
    if explicit:
        raise MetricsPortError(
            f"no free metrics port in {where}; set --metrics-port (LAYERBUS_METRICS_PORT) "
            "to a free port, or 0 to turn the exporter off"
        )
    log.warning(
        "%s: no free metrics port in %s; running without metrics "
        "(set --metrics-port / LAYERBUS_METRICS_PORT to a free port)",
        service,
        where,
    )
    return 0


def scrape_host(metrics_host: str, advertised: str = "") -> str:
    """The host Prometheus should scrape: metrics_host, unless it is a wildcard.

    A wildcard falls back to the host of the advertised (or bound) ZMQ address
    `tcp://HOST:PORT`, then to this machine's host name.
    """
    if metrics_host not in WILDCARDS:
        return metrics_host
    if advertised:
        host = urlsplit(advertised).hostname or ""
        if host and host not in WILDCARDS:
            return host
    return socket.gethostname()


class AdvertiseError(ValueError):
    """A --metrics-advertise value that is not HOST or HOST:PORT."""


def parse_advertise(value: str) -> tuple[str, int | None]:
    """'HOST', 'HOST:PORT', '[V6]' or '[V6]:PORT' -> (host, port or None).

    Raises AdvertiseError naming the setting for anything else (a URL, a bare IPv6
    address with a port ambiguity, a port outside 1-65535, a wildcard host).
    """
    why = "give HOST or HOST:PORT (an IPv6 address in brackets)"
    if "/" in value or "@" in value or (value.count(":") > 1 and not value.startswith("[")):
        raise AdvertiseError(f"--metrics-advertise (LAYERBUS_METRICS_ADVERTISE) {value!r}: {why}")
    try:
        parts = urlsplit(f"//{value}")
        host, port = parts.hostname or "", parts.port
    except ValueError as err:
        raise AdvertiseError(
            f"--metrics-advertise (LAYERBUS_METRICS_ADVERTISE) {value!r}: {err}; {why}"
        ) from None
    if host in WILDCARDS or port == 0:
        raise AdvertiseError(
            f"--metrics-advertise (LAYERBUS_METRICS_ADVERTISE) {value!r}: "
            "name the host and port Prometheus reaches, not a wildcard or port 0"
        )
    return host, port


def metrics_url(port: int, metrics_host: str, advertised: str = "", override: str = "") -> str:
    """http://HOST:PORT/metrics for a serving exporter, "" when metrics are off.

    override (--metrics-advertise) is HOST or HOST:PORT and wins over both the
    scrape host and the bound port; without it see scrape_host.
    """
    if not port:
        return ""
    if override:
        host, advertised_port = parse_advertise(override)
        port = advertised_port or port
    else:
        host = scrape_host(metrics_host, advertised)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"
