"""End a service process once its graceful stop is done, without the interpreter's teardown.

After a stage's Leave is sent, its sockets closed and the atexit handlers run (the
rendezvous folder goes, stage/worker.py), Python's finalization still frees torch's and
vLLM's objects one module at a time: about 2 s of a stage's exit on two cores (0.25 s of a
coordinator's), which nobody waits for usefully. Called from the main thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn


def exit_process(code: int = 0) -> NoReturn:
    """What the interpreter does at exit up to its teardown, then `os._exit(code)`.

    threading's exit hooks (executors stop their idle workers) and the joins of the
    non-daemon threads, the atexit handlers, the logs and standard streams flushed.
    """
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
