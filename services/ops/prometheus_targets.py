"""`layerbus prometheus-targets`: the gateway's /status -> Prometheus file-based discovery.

Prometheus' `file_sd_configs` reads a JSON list of `{"targets": ["HOST:PORT"],
"labels": {...}}`. Every service's `metrics` URL in /status becomes one entry
labelled with its service kind (and the stage's name); a service whose metrics
are off (empty URL) is left out. All of them are served at `/metrics`, the
path Prometheus scrapes by default.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit


def target_of(url: str) -> str:
    """http://HOST:PORT/metrics -> HOST:PORT ("" for an empty or portless URL)."""
    parts = urlsplit(url)
    return parts.netloc if parts.port else ""


def file_sd(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The file_sd entries of a gateway /status document (gateway, coordinator, stages)."""
    entries: list[tuple[str, dict[str, str]]] = [
        (status.get("gateway", {}).get("metrics", ""), {"service": "gateway"}),
        (status.get("coordinator", {}).get("metrics", ""), {"service": "coordinator"}),
    ]
    for stage in status.get("stages", []):
        entries.append((stage.get("metrics", ""), {"service": "stage", "stage": stage["name"]}))
    out = []
    for url, labels in entries:
        target = target_of(url)
        if target:
            out.append({"targets": [target], "labels": labels})
    return out


def fetch_status(gateway: str, api_key: str = "") -> dict[str, Any]:
    """GET GATEWAY/status (with the API key when the gateway wants one)."""
    request = urllib.request.Request(gateway.rstrip("/") + "/status")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        status: dict[str, Any] = json.loads(reply.read())
    return status


def write_targets(gateway: str, output: str = "", api_key: str = "") -> int:
    """`layerbus prometheus-targets`: JSON to `output` (atomically) or stdout; 1 without /status."""
    import os
    import sys

    try:
        status = fetch_status(gateway, api_key)
    except (OSError, ValueError) as err:
        print(f"layerbus: no /status from {gateway}: {err}", file=sys.stderr)
        return 1
    text = json.dumps(file_sd(status), indent=2) + "\n"
    if output:
        tmp = output + ".tmp"
        with open(tmp, "w") as out:  # Prometheus must never read half a file
            out.write(text)
        os.replace(tmp, output)
    else:
        sys.stdout.write(text)
    return 0
