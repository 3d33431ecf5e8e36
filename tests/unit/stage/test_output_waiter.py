"""The async runner's output thread (services/stage/output_waiter.py)."""

from __future__ import annotations

import threading

import zmq

from services.stage.output_waiter import OutputWaiter


def test_outputs_resolve_in_order_and_wake_the_poller() -> None:
    ctx = zmq.Context()
    gate = threading.Event()

    def resolve(pending: str) -> str:
        if pending == "slow":
            gate.wait(10)
        if pending == "bad":
            raise RuntimeError("copy failed")
        return pending.upper()

    waiter: OutputWaiter[int] = OutputWaiter(ctx, resolve)
    try:
        waiter.put(1, "slow")
        waiter.put(2, "bad")
        waiter.put(3, "fast")
        assert waiter.take() == []  # the first holds the rest back: results stay in order
        gate.set()
        got: list[tuple[int, str | None, str | None]] = []
        poller = zmq.Poller()
        poller.register(waiter.wake, zmq.POLLIN)
        while len(got) < 3:
            assert poller.poll(10_000), "the output thread never woke the main loop"
            got += [(i, out, None if e is None else str(e)) for i, out, e in waiter.take()]
        assert got == [(1, "SLOW", None), (2, None, "copy failed"), (3, "FAST", None)]
    finally:
        waiter.close()
        ctx.term()
