"""End a stage process once its graceful leave is done, without the interpreter's teardown.

After the Leave is sent, the sockets closed and the atexit handlers run (the rendezvous
folder goes, worker.py), Python's finalization still frees torch's and vLLM's objects one
module at a time: about 2 s of a stage's exit on two cores, which nobody waits for usefully.
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
    """Join the non-daemon threads, run the atexit handlers, flush the logs, `os._exit(code)`."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
