"""Waits for the sampled tokens of a GPU step off the stage's main thread.

With vLLM's async model runner (a single stage on a GPU, like `vllm serve`),
sampling returns at once with the tokens still being copied to the host. The
main thread goes on to the next step (already here: the coordinator plans one
ahead), so the GPU never waits for Python; this thread waits for the copy and
wakes the main thread through an inproc socket so that it sends the result.
vLLM's own worker process does the same with its output thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import zmq

T = TypeVar("T")
WAKE = "inproc://layerbus-stage-outputs"


class OutputWaiter(Generic[T]):
    """Resolves pending outputs in order on its own thread; `done` is read by the main thread.

    T is what the stage keeps with an output (the step's header).
    """

    def __init__(self, ctx: zmq.Context, resolve: Callable[[Any], Any]) -> None:  # type: ignore[type-arg]
        self.resolve = resolve
        self._todo: queue.SimpleQueue[tuple[T, Any] | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[T, Any, BaseException | None]] = queue.SimpleQueue()
        self.wake = ctx.socket(zmq.PULL)  # the main thread polls this
        self.wake.setsockopt(zmq.LINGER, 0)
        self.wake.bind(WAKE)
        self._ctx = ctx
        self._thread = threading.Thread(target=self._run, name="outputs", daemon=True)
        self._thread.start()

    def put(self, item: T, pending: Any) -> None:
        self._todo.put((item, pending))

    def take(self) -> list[tuple[T, Any, BaseException | None]]:
        """Main thread: outputs resolved since the last call, oldest first."""
        while self.wake.poll(0):
            self.wake.recv()
        items = []
        while True:
            try:
                items.append(self.done.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join(timeout=5)
        self.wake.close(linger=0)

    def _run(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(WAKE)
        try:
            while (job := self._todo.get()) is not None:
                item, pending = job
                try:
                    self.done.put((item, self.resolve(pending), None))
                except BaseException as err:  # the main thread fails the step
                    self.done.put((item, None, err))
                push.send(b"")
        finally:
            push.close(linger=0)
