"""The async runner's output thread (services/stage/output_waiter.py)."""

from __future__ import annotations

import queue
import sys
import threading

from services.stage.output_waiter import SWITCH_INTERVAL_S, OutputWaiter


def test_outputs_resolve_in_order_and_are_delivered_on_the_output_thread() -> None:
    gate = threading.Event()
    got: queue.SimpleQueue[tuple[int, str | None, str | None, str]] = queue.SimpleQueue()

    def resolve(pending: str) -> str:
        if pending == "slow":
            gate.wait(10)
        if pending == "bad":
            raise RuntimeError("copy failed")
        return pending.upper()

    def deliver(item: int, output: str | None, error: BaseException | None) -> None:
        if item == 4:
            raise OSError("socket closed")  # logged; later outputs still go out
        text = None if error is None else str(error)
        got.put((item, output, text, threading.current_thread().name))

    interval = sys.getswitchinterval()
    waiter: OutputWaiter[int] = OutputWaiter(resolve, deliver)
    try:
        for item, pending in [(1, "slow"), (2, "bad"), (4, "x"), (3, "fast")]:
            waiter.put(item, pending)
        assert got.empty()  # the first holds the rest back: results stay in order
        gate.set()
        out = [got.get(timeout=10) for _ in range(3)]
        assert out == [
            (1, "SLOW", None, "outputs"),
            (2, None, "copy failed", "outputs"),
            (3, "FAST", None, "outputs"),
        ]
        # The main thread hands the GIL over soon once the tokens are in.
        assert sys.getswitchinterval() <= SWITCH_INTERVAL_S
    finally:
        waiter.close()
        sys.setswitchinterval(interval)
