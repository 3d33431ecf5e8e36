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


def own_stage_name(env: Mapping[str, str], pid: int = 0, hostname: str = "") -> str:
    """The name this container's stage registers under (as services/stage names it).

    --name; else stage-START-END with --layers; else, placed by the coordinator,
    HOST-PID of the stage process (services/stage/naming.py).
    """
    name = env.get("LAYERBUS_STAGE_NAME", "")
    if name:
        return name
    layers = env.get("LAYERBUS_STAGE_LAYERS", "").strip()
    if not layers:
        import socket

        from services.stage.naming import unique_stage_name

        return unique_stage_name(hostname or socket.gethostname(), pid or os.getpid())
    start, _, end = layers.partition(":")
    return f"stage-{start.strip()}-{end.strip()}"


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _local(address: str) -> str:
    """tcp://0.0.0.0:5555 or tcp://*:5555 -> tcp://127.0.0.1:5555 (probe from inside)."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("0.0.0.0", "*", ""):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def infer_target(cmdline: list[str], env: Mapping[str, str], pid: int = 0) -> tuple[str, str]:
    """(target, stage) for a `layerbus COMMAND ...` process line (process `pid`); ("", "")
    if not one."""
    for i, arg in enumerate(cmdline):
        if arg not in ("coordinator", "stage", "gateway"):
            continue
        launcher = cmdline[i - 1] if i else ""
        if not (launcher.endswith("layerbus") or launcher == "services.ops.cli"):
            continue
        args = cmdline[i + 1 :]
        if arg == "gateway":
            port = _flag(args, "port") or env.get("LAYERBUS_PORT") or "8000"
            return f"http://127.0.0.1:{port}/health", ""
        if arg == "coordinator":
            bind = _flag(args, "bind") or env.get("LAYERBUS_BIND") or "tcp://127.0.0.1:5555"
            return _local(bind), ""
        coordinator = (
            _flag(args, "coordinator")
            or env.get("LAYERBUS_STAGE_COORDINATOR")
            or "tcp://127.0.0.1:5555"
        )
        stage_env = dict(env)
        for name in ("name", "layers"):
            value = _flag(args, name)
            if value is not None:
                stage_env[f"LAYERBUS_STAGE_{name.upper()}"] = value
        return coordinator, own_stage_name(stage_env, pid)
    return "", ""


def running_service(env: Mapping[str, str]) -> tuple[str, str]:
    """infer_target for the first layerbus service running in this container (from /proc)."""
    from pathlib import Path

    for entry in sorted(Path("/proc").iterdir(), key=lambda p: p.name.zfill(10)):
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        found = infer_target(argv, env, int(entry.name))
        if found[0]:
            return found
    return "", ""


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
        f"health target {target!r} is neither http(s):// nor tcp:// and no layerbus service "
        "runs here; set LAYERBUS_HEALTH_TARGET or pass it: layerbus health TARGET [STAGE]"
    )
