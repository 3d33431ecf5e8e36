"""`layerbus health TARGET [STAGE]`: a container health check for any layerbus service.

TARGET is an http(s):// URL (healthy: HTTP 200, e.g. the gateway's /health) or the
coordinator's tcp:// address (healthy: it answers a StatusQuery). With a STAGE name
the coordinator must also list that stage in a live state, so a stage container is
healthy only while the coordinator counts it.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from shared import wire


def stage_verdict(status: wire.Status, stage: str) -> str | None:
    """None when `stage` is listed live in the coordinator's status, else why not."""
    for entry in status.stages:
        if entry.name == stage:
            return f"{stage} is dead" if entry.state == "dead" else None
    names = ", ".join(s.name for s in status.stages) or "none"
    return f"the coordinator does not list {stage} (it lists: {names})"


def own_stage_name(env: Mapping[str, str]) -> str:
    """The name this container's stage registers under (as services/stage/server.py names it)."""
    name = env.get("LAYERBUS_STAGE_NAME", "")
    if name:
        return name
    start, _, end = env.get("LAYERBUS_STAGE_LAYERS", "").partition(":")
    return f"stage-{start.strip()}-{end.strip()}"


def probe_http(url: str, timeout_s: float) -> str | None:
    """None when the URL answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"{url} answered {resp.status}"
    except urllib.error.HTTPError as err:
        return f"{url} answered {err.code}"
    except OSError as err:
        return f"{url}: {err}"


def query_status(address: str, timeout_s: float) -> wire.Status:
    """One StatusQuery to the coordinator; raises TimeoutError when it does not answer."""
    import zmq

    from shared import codec
    from shared.settings import TransportSettings
    from shared.sockets import make_socket

    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, TransportSettings.model_validate({}))
    try:
        sock.connect(address)
        nonce = int.from_bytes(os.urandom(4), "big")
        sock.send_multipart(codec.encode(wire.StatusQuery(nonce=nonce)))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(int(left * 1000)):
                break
            msg = codec.decode(sock.recv_multipart())
            if isinstance(msg, wire.Status) and msg.nonce == nonce:
                return msg
        raise TimeoutError(f"no status from {address} within {timeout_s} s")
    finally:
        sock.close(0)
        ctx.term()


def probe(target: str, stage: str = "", timeout_s: float = 4.0) -> str | None:
    """None when healthy, else a one-line reason."""
    if target.startswith(("http://", "https://")):
        return probe_http(target, timeout_s)
    if target.startswith("tcp://"):
        try:
            status = query_status(target, timeout_s)
        except (TimeoutError, wire.WireError, OSError) as err:
            return str(err)
        return stage_verdict(status, stage) if stage else None
    return (
        f"health target {target!r} is neither http(s):// nor tcp://; "
        "set LAYERBUS_HEALTH_TARGET or pass it: layerbus health TARGET [STAGE]"
    )
