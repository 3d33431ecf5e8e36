"""The stage's heartbeats (services/stage/heartbeat.py)."""

from __future__ import annotations

import os
import threading

import zmq

from services.stage.heartbeat import HeartbeatThread, heartbeat_message
from services.stage.step_stats import StepStats
from shared import codec, wire
from shared.settings import TransportSettings


def test_a_beat_carries_the_step_counters_rounded_and_the_chain() -> None:
    stats = StepStats()
    stats.record(0.0123456)
    beat = heartbeat_message("stage-0-15", 7, stats, num_requests=3, generation=2)
    assert beat == wire.Heartbeat(
        name="stage-0-15",
        seq=7,
        pid=os.getpid(),
        steps=1,
        busy_s=0.012,
        recent_step_ms=2.469,
        num_requests=3,
        generation=2,
    )
    waited = heartbeat_message("s", 8, stats, num_requests=0, generation=2, cpu_wait_s=1.23456)
    assert waited.cpu_wait_s == 1.235


def test_the_thread_beats_in_sequence_until_stopped() -> None:
    ctx = zmq.Context()
    coordinator = ctx.socket(zmq.ROUTER)
    port = coordinator.bind_to_random_port("tcp://127.0.0.1")
    threads: set[str] = set()

    def beat(seq: int) -> wire.Heartbeat:
        threads.add(threading.current_thread().name)
        return wire.Heartbeat(name="s", seq=seq, generation=4)

    beats = HeartbeatThread(
        ctx,
        TransportSettings(heartbeat_interval_s=0.01),
        f"tcp://127.0.0.1:{port}",
        None,
        beat,
    )
    try:
        beats.start()
        got = []
        while len(got) < 3:
            assert coordinator.poll(10_000), "no heartbeat arrived"
            msg = codec.decode(coordinator.recv_multipart()[1:])
            assert isinstance(msg, wire.Heartbeat)
            got.append(msg)
        assert [b.seq for b in got] == [1, 2, 3]
        assert threads == {"heartbeat"}  # built on its own thread, never the main one
    finally:
        beats.stop()
        beats._thread.join(10)
        assert not beats._thread.is_alive()
        coordinator.close(linger=0)
        ctx.term()
