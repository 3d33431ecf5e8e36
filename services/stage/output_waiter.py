"""Waits for the sampled tokens of a GPU step off the stage's main thread, and sends them.

With vLLM's async model runner (a single stage on a GPU, like `vllm serve`),
sampling returns at once with the tokens still being copied to the host. The
main thread goes on to the next step (already here: the coordinator plans one
ahead), so the GPU never waits for Python. This thread waits for the copy and
delivers the result itself, on a socket of its own: the main thread is busy
preparing the next step then, and the coordinator plans the step after it
only once this result is in. vLLM's own worker process has an output thread
for the same reason.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("layerbus.stage")

# How long the main thread may keep the GIL from this thread once its tokens are in
# (Python's default is 5 ms, a third of a decode step of an 8B model on an H200).
SWITCH_INTERVAL_S = 0.0005


class OutputWaiter(Generic[T]):
    """Resolves pending outputs in order and delivers each, on its own thread.

    T is what the stage keeps with an output (the step's header). deliver(item,
    output, error) runs on this thread: error is what resolving raised, if anything.
    """

    def __init__(
        self,
        resolve: Callable[[Any], Any],
        deliver: Callable[[T, Any, BaseException | None], None],
    ) -> None:
        self.resolve = resolve
        self.deliver = deliver
        self._todo: queue.SimpleQueue[tuple[T, Any] | None] = queue.SimpleQueue()
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="outputs", daemon=True)
        self._thread.start()

    def put(self, item: T, pending: Any) -> None:
        self._todo.put((item, pending))

    def close(self) -> None:
        """Deliver what is queued, then stop (the main thread, at exit)."""
        self._todo.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (job := self._todo.get()) is not None:
            item, pending = job
            try:
                output, error = self.resolve(pending), None
            except BaseException as err:  # delivered as the step's failure
                output, error = None, err
            try:
                self.deliver(item, output, error)
            except Exception:  # a send that failed must not stop later results
                log.exception("could not deliver a step's output")
