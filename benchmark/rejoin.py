"""How long a stage takes to rejoin: kill it as a lost host would, start it again with
the same command, and time until the gateway answers a completion.

With the same layer range the restarted stage finds its compile cache
(services/stage/compile_cache.py), so this is the start-up a failed stage pays, as
opposed to its first start.
"""

from __future__ import annotations

import time

import httpx

from benchmark.gpu_summary import Deadline
from benchmark.processes import Children


def answered(url: str, model: str, timeout: float) -> bool:
    """Whether one short completion comes back whole within `timeout` seconds."""
    body = {"model": model, "prompt": "The capital of France is", "max_tokens": 2}
    try:
        reply = httpx.post(url + "/v1/completions", json=body, timeout=timeout)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and bool(reply.json().get("choices"))


def measure_rejoin(
    children: Children, stage: str, url: str, model: str, deadline: Deadline
) -> float:
    """Seconds from starting `stage` again (after a SIGKILL) to a completed request."""
    children.kill(stage)
    began = time.monotonic()
    children.respawn(stage, f"{stage}-rejoin")
    while not deadline.expired():
        children.check_alive()
        if answered(url, model, min(30.0, max(1.0, deadline.left()))):
            return time.monotonic() - began
        time.sleep(0.5)
    raise TimeoutError(f"{stage} did not rejoin in time:\n{children.tail(stage + '-rejoin')}")
