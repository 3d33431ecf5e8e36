"""What layerbus's framing adds to one pipeline hop, against a raw pyzmq send.

One hop carries a decode-size activation (hidden_states and residual of
`--rows` tokens, as a Llama pipeline stage hands them on) from a DEALER to a
ROUTER over TCP on loopback. Two ways, measured as a ping-pong whose half
round trip is one hop:

- raw: the same tensor bytes sent with copy=False, received with copy=False;
- layerbus: shared/codec.py's Step header (with a small step plan) plus
  shared/tensor_frames.py's zero-copy frames, decoded and rebuilt into
  tensors on the other side, as a stage does.

Prints the median and p99 of each and of the difference (target: the
median added latency is at most 0.5 ms per hop); `--output` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import zmq

from shared import codec, wire
from shared.settings import TransportSettings
from shared.sockets import make_socket
from shared.tensor_frames import frames_to_tensors, tensors_to_frames

TARGET_ADDED_MS = 0.5
MAX_ELEMENTS = 1 << 28


def decode_plan(rows: int) -> wire.StepPlan:
    """A step plan for `rows` running requests that each decode one token."""
    req_ids = [f"cmpl-{i:04d}-bench" for i in range(rows)]
    cached = wire.CachedRequestsPlan(
        req_ids=req_ids,
        resumed_req_ids=[],
        new_token_ids=[[1000 + i] for i in range(rows)],
        all_token_ids={},
        new_block_ids=[None] * rows,
        num_computed_tokens=[200 + i for i in range(rows)],
        num_output_tokens=[64] * rows,
    )
    return wire.StepPlan(
        new_requests=[],
        cached=cached,
        num_scheduled_tokens=dict.fromkeys(req_ids, 1),
        total_num_scheduled_tokens=rows,
        finished_req_ids=[],
    )


def activation(rows: int, hidden: int) -> dict[str, torch.Tensor]:
    """hidden_states and residual of a Llama stage for `rows` tokens."""
    gen = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(rows, hidden, generator=gen),
        "residual": torch.randn(rows, hidden, generator=gen),
    }


Socket = zmq.Socket  # type: ignore[type-arg]
Send = Callable[[Socket, dict[str, torch.Tensor], int], None]


def _layerbus_send(plan: wire.StepPlan) -> Send:
    def send(sock: Socket, tensors: dict[str, torch.Tensor], step_id: int) -> None:
        metas, buffers = tensors_to_frames(tensors)
        step = wire.Step(step_id=step_id, plan=plan, tensors=metas)
        sock.send_multipart([*codec.encode(step), *buffers], copy=False)

    return send


def _layerbus_receive(frames: list[Any]) -> dict[str, torch.Tensor]:
    header = codec.decode(frames[:2])
    if not isinstance(header, wire.Step):
        raise wire.WireError(f"expected Step, got {type(header).__name__}")
    return frames_to_tensors(header.tensors, frames[2:], MAX_ELEMENTS)


def _raw_send(sock: Socket, tensors: dict[str, torch.Tensor], step_id: int) -> None:
    buffers: list[Any] = [t.numpy() for t in tensors.values()]
    sock.send_multipart(buffers, copy=False)


def _raw_receive(frames: list[Any]) -> list[Any]:
    return [frame.buffer for frame in frames]


def _echo(router: Socket, rounds: int, framed: bool, plan: wire.StepPlan) -> None:
    """The far side: receive a hop, rebuild it, send it back as the next stage would."""
    for i in range(rounds):
        frames = router.recv_multipart(copy=False)
        identity, body = frames[0], frames[1:]
        if framed:
            tensors = _layerbus_receive(body)
            metas, buffers = tensors_to_frames(tensors)
            step = wire.Step(step_id=i, plan=plan, tensors=metas)
            router.send_multipart([identity, *codec.encode(step), *buffers], copy=False)
        else:
            _raw_receive(body)
            router.send_multipart([identity, *body], copy=False)


def measure(rows: int, hidden: int, rounds: int, warmup: int, framed: bool) -> list[float]:
    """One-hop latencies in ms (half of each round trip) for one way of sending."""
    ctx = zmq.Context()
    transport = TransportSettings.model_validate({})
    router = make_socket(ctx, zmq.ROUTER, transport)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = make_socket(ctx, zmq.DEALER, transport, identity=b"hop-bench")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    plan = decode_plan(rows)
    tensors = activation(rows, hidden)
    total = warmup + rounds
    echo = threading.Thread(target=_echo, args=(router, total, framed, plan), daemon=True)
    echo.start()
    send = _layerbus_send(plan) if framed else _raw_send
    receive: Callable[[list[Any]], Any] = _layerbus_receive if framed else _raw_receive
    hops: list[float] = []
    try:
        for i in range(total):
            start = time.perf_counter()
            send(dealer, tensors, i)
            receive(dealer.recv_multipart(copy=False))
            if i >= warmup:
                hops.append((time.perf_counter() - start) * 1000.0 / 2)
        echo.join()
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()
    return hops


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(raw: list[float], framed: list[float]) -> dict[str, Any]:
    """Median and p99 of each way and of the added latency per hop, in ms."""
    return {
        "raw_ms": {"median": statistics.median(raw), "p99": percentile(raw, 99)},
        "layerbus_ms": {"median": statistics.median(framed), "p99": percentile(framed, 99)},
        "added_ms": {
            "median": statistics.median(framed) - statistics.median(raw),
            "p99": percentile(framed, 99) - percentile(raw, 99),
        },
        "target_added_ms": TARGET_ADDED_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.hop_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=32, help="tokens in the activation")
    parser.add_argument("--hidden", type=int, default=576, help="hidden size (SmolLM2-135M)")
    parser.add_argument("--rounds", type=int, default=2000, help="measured round trips per way")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured round trips first")
    parser.add_argument("--output", type=Path, help="write the summary here as JSON")
    parser.add_argument("--smoke", action="store_true", help="a few rounds, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.warmup = 20, 2
    # Alternate the two ways so background load hits both alike.
    raw: list[float] = []
    framed: list[float] = []
    for _ in range(4):
        raw += measure(args.rows, args.hidden, args.rounds // 4 or 1, args.warmup, framed=False)
        framed += measure(args.rows, args.hidden, args.rounds // 4 or 1, args.warmup, framed=True)
    summary = summarize(raw, framed)
    summary.update(
        rows=args.rows,
        hidden=args.hidden,
        dtype="float32",
        bytes_per_hop=2 * args.rows * args.hidden * 4,
        rounds=len(raw),
    )
    added = summary["added_ms"]
    print(
        f"one hop, {args.rows} x {args.hidden} float32 hidden_states + residual "
        f"({summary['bytes_per_hop']} bytes), {len(raw)} rounds each"
    )
    for key, label in (("raw_ms", "raw pyzmq"), ("layerbus_ms", "layerbus framing")):
        print(
            f"  {label:17} median {summary[key]['median']:.3f} ms  p99 {summary[key]['p99']:.3f} ms"
        )
    print(
        f"  added per hop     median {added['median']:.3f} ms  p99 {added['p99']:.3f} ms "
        f"(target: median <= {TARGET_ADDED_MS} ms)"
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
