"""Where one engine step spends its time, per phase (`layerbus_step_phase_seconds`).

The coordinator times the phases of the token loop it runs (schedule, plan,
send, update, publish); a stage times its own (decode, ring_wait, forward,
send). Each phase is a histogram labelled with the service and phase, so
`benchmark/step_overhead.py` (or a dashboard) divides the sums by the counts
for the mean per step. Observing costs about a microsecond: always on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Histogram

BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

PHASES = {
    # coordinator, engine thread
    "schedule": "vLLM's scheduler picks the next micro-batch's step",
    "plan": "SchedulerOutput -> wire StepPlan, placeholders and their source steps",
    "send": "encode the Step and hand it to the socket to the first stage",
    "update": "vLLM's scheduler takes in a step's sampled tokens",
    "publish": "new tokens -> Outputs messages to the gateways",
    # stage, main thread
    "decode": "decode and check a Step, frames -> tensors",
    "ring_wait": "first stage: a plan waited for the last stage's tokens",
    "forward": "vLLM's model runner on this stage's layers (and sampling on the last)",
    "forward_send": "activations to the next stage, or tokens to the ring and the coordinator",
}

PHASE_SECONDS = Histogram(
    "layerbus_step_phase_seconds",
    "Time one step spends in each phase of the token loop (see shared/step_phases.py)",
    ["service", "phase"],
    buckets=BUCKETS,
)


def observe(service: str, phase: str, seconds: float) -> None:
    PHASE_SECONDS.labels(service=service, phase=phase).observe(seconds)


@contextmanager
def timed(service: str, phase: str) -> Iterator[None]:
    """Time the block as one observation of `phase`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(service, phase, time.perf_counter() - started)
