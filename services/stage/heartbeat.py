"""The stage's heartbeats to the coordinator, on a thread with its own DEALER.

A long step on the main thread must never look like a death: the
coordinator counts a stage lost after `LAYERBUS_HEARTBEAT_MISSES` silent
intervals. Each beat also carries the step counters the coordinator's
micro-batch control and `/status` read.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import zmq

from services.stage.step_stats import StepStats
from shared import codec, curve, wire
from shared.settings import TransportSettings
from shared.sockets import make_socket


def heartbeat_message(
    name: str,
    seq: int,
    stats: StepStats,
    num_requests: int,
    generation: int,
    cpu_wait_s: float = 0.0,
) -> wire.Heartbeat:
    """One beat: this process, its step counters, the requests it holds, its chain, and how
    long its main thread waited for a CPU (cpu_wait.py)."""
    return wire.Heartbeat(
        name=name,
        seq=seq,
        pid=os.getpid(),
        steps=stats.steps,
        busy_s=round(stats.busy_s, 3),
        recent_step_ms=round(stats.recent_step_ms, 3),
        num_requests=num_requests,
        generation=generation,
        cpu_wait_s=round(cpu_wait_s, 3),
    )


class HeartbeatThread:
    """Sends a Heartbeat every interval; runs on the `heartbeat` thread, stopped by the main one."""

    def __init__(
        self,
        ctx: zmq.Context,  # type: ignore[type-arg]
        transport: TransportSettings,
        coordinator: str,
        curve_options: curve.CurveOptions | None,
        beat: Callable[[int], wire.Heartbeat],
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.coordinator = coordinator
        self.curve_options = curve_options
        self.beat = beat  # seq -> the beat to send (read on this thread)
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        sock = make_socket(self.ctx, zmq.DEALER, self.transport, curve=self.curve_options)
        sock.connect(self.coordinator)
        seq = 0
        try:
            while not self.stopping.wait(self.transport.heartbeat_interval_s):
                seq += 1
                # The coordinator may be away; the next beat tries again.
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(codec.encode(self.beat(seq)), zmq.NOBLOCK)
        finally:
            sock.close(linger=0)
