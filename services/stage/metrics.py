"""A stage's pipeline metrics (`layerbus_stage_*`), served on --metrics-port.

Labels are the stage name and its layer range (`START:END`), nothing per
request. The hop to the next stage is timed from handing a step's output to
the socket until ZMQ has written it out (its MessageTracker is done): a slow
or distant next hop, or a full TCP window, shows up there. A small thread
waits on those trackers, so the stage's main thread never blocks for it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

import zmq
from prometheus_client import Counter, Gauge, Histogram

LABELS = ["stage", "layers"]
FORWARD_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
HOP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip

FORWARD = Histogram(
    "layerbus_stage_forward_seconds",
    "Time to run one step on this stage's layers (decode, forward, sample on the last)",
    LABELS,
    buckets=FORWARD_BUCKETS,
)
HOP = Histogram(
    "layerbus_stage_hop_seconds",
    "Time to send a step's output to the next stage (until ZMQ has written it), "
    "or the result to the coordinator",
    LABELS,
    buckets=HOP_BUCKETS,
)
ACTIVATION_BYTES = Counter(
    "layerbus_stage_activation_bytes",
    "Bytes of steps received (in) and sent on (out), header and tensors",
    [*LABELS, "direction"],
)
STEPS = Counter("layerbus_stage_steps", "Steps this stage ran", LABELS)
QUEUE_DEPTH = Gauge(
    "layerbus_stage_queue_depth",
    "Steps handed to the socket to the next stage and not yet written out",
    LABELS,
)

RING_WAITING = Gauge(
    "layerbus_stage_ring_waiting",
    "Plans at the first stage waiting for the last stage's sampled tokens (the token ring)",
    LABELS,
)


def frame_bytes(frames: Iterable[Any]) -> int:
    """Total size of message frames (bytes, zmq.Frame, numpy buffers)."""
    return sum(memoryview(f).nbytes for f in frames)


class StageMetrics:
    """One stage's metric children; the main thread reports, a hop thread times sends."""

    def __init__(self, name: str, start: int, end: int) -> None:
        labels = {"stage": name, "layers": f"{start}:{end}"}
        self.forward = FORWARD.labels(**labels)
        self.hop = HOP.labels(**labels)
        self.bytes_in = ACTIVATION_BYTES.labels(**labels, direction="in")
        self.bytes_out = ACTIVATION_BYTES.labels(**labels, direction="out")
        self.steps = STEPS.labels(**labels)
        self.queue_depth = QUEUE_DEPTH.labels(**labels)
        self.ring_waiting_plans = RING_WAITING.labels(**labels)
        self._sends: queue.SimpleQueue[tuple[zmq.MessageTracker, float] | None] = (
            queue.SimpleQueue()
        )
        self._hop_thread: threading.Thread | None = None

    def step(self, seconds: float, received: Iterable[Any]) -> None:
        """A step ran: its forward time and the frames it arrived in."""
        self.forward.observe(seconds)
        self.steps.inc()
        self.bytes_in.inc(frame_bytes(received))

    def ring_waiting(self, plans: int) -> None:
        """Plans now waiting at the first stage for tokens from the last."""
        self.ring_waiting_plans.set(plans)

    def sent(self, frames: Iterable[Any], tracker: zmq.MessageTracker | None, t0: float) -> None:
        """A step's output went out at t0 (monotonic); tracker (if any) says when it left."""
        self.bytes_out.inc(frame_bytes(frames))
        if tracker is None:
            self.hop.observe(time.monotonic() - t0)
            return
        if self._hop_thread is None:
            self._hop_thread = threading.Thread(target=self._time_hops, name="hops", daemon=True)
            self._hop_thread.start()
        self.queue_depth.inc()
        self._sends.put((tracker, t0))

    def close(self) -> None:
        """Stop the hop thread (after the sockets are closed, trackers finish)."""
        if self._hop_thread is not None:
            self._sends.put(None)
            self._hop_thread.join(timeout=2)

    def _time_hops(self) -> None:
        """Hop thread: sends leave in order; observe each when ZMQ has written it."""
        while (item := self._sends.get()) is not None:
            tracker, t0 = item
            while True:
                try:
                    tracker.wait(timeout=1.0)
                    break
                except zmq.NotDone:
                    continue
            self.hop.observe(time.monotonic() - t0)
            self.queue_depth.dec()
