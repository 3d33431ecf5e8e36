"""services/stage/metrics.py: frame sizes, step and hop observations by stage labels."""

from __future__ import annotations

import time

import numpy as np
import zmq
from prometheus_client import REGISTRY

from services.stage.metrics import StageMetrics, frame_bytes


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_frame_bytes_counts_bytes_frames_and_numpy_buffers() -> None:
    frame = zmq.Frame(b"abcd")
    assert frame_bytes([b"xy", frame, np.zeros(6, dtype=np.uint8), b""]) == 12


def test_a_step_counts_forward_time_steps_and_bytes_in() -> None:
    m = StageMetrics("unit-step", 0, 4)
    labels = {"stage": "unit-step", "layers": "0:4"}
    m.step(0.02, [b"hdr", b"x" * 100])
    assert value("layerbus_stage_steps_total", **labels) == 1
    assert value("layerbus_stage_forward_seconds_count", **labels) == 1
    assert value("layerbus_stage_forward_seconds_sum", **labels) == 0.02
    assert value("layerbus_stage_activation_bytes_total", **labels, direction="in") == 103


def test_a_tracked_send_is_timed_once_zmq_has_sent_it() -> None:
    m = StageMetrics("unit-hop", 4, 8)
    labels = {"stage": "unit-hop", "layers": "4:8"}
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://unit-hop")
    push.connect("inproc://unit-hop")
    try:
        out = [b"header", np.ones(1000, dtype=np.uint8)]
        tracker = push.send_multipart(out, copy=False, track=True)
        m.sent(out, tracker, time.monotonic())
        assert len(pull.recv_multipart()) == 2
        m.close()
        assert value("layerbus_stage_hop_seconds_count", **labels) == 1
        assert value("layerbus_stage_queue_depth", **labels) == 0
        assert value("layerbus_stage_activation_bytes_total", **labels, direction="out") == 1006
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def test_an_untracked_send_is_timed_at_once() -> None:
    m = StageMetrics("unit-last", 8, 12)
    m.sent([b"result"], None, time.monotonic())
    assert value("layerbus_stage_hop_seconds_count", stage="unit-last", layers="8:12") == 1
