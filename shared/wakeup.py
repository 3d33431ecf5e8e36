"""A pipe a signal handler writes to, so a main loop's zmq poll returns at once.

A Python signal handler runs while zmq_poll is interrupted, but pyzmq then polls
again for the rest of the timeout: a SIGTERM waited up to a heartbeat interval
before the loop saw it. Registered in the loop's poller, this pipe wakes it.
"""

from __future__ import annotations

import contextlib
import os

import zmq


class Wakeup:
    """The read end goes into a zmq.Poller; `wake()` (a signal handler) makes it readable.

    It stays readable: a loop that is woken is stopping (the stage's leave, the
    coordinator's stop), so nothing reads the pipe back.
    """

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def register(self, poller: zmq.Poller) -> None:
        poller.register(self.fd, zmq.POLLIN)

    def wake(self) -> None:
        """Safe in a signal handler: never blocks (a full pipe is awake already)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def close(self) -> None:
        for fd in (self.fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
