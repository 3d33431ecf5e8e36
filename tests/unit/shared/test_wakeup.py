"""Wakeup: a signal handler's write makes a zmq poll return (shared/wakeup.py)."""

from __future__ import annotations

import signal
import threading

import zmq

from shared.wakeup import Wakeup


def test_a_wake_makes_the_poll_return_the_pipe() -> None:
    wakeup = Wakeup()
    poller = zmq.Poller()
    wakeup.register(poller)
    try:
        assert dict(poller.poll(timeout=0)) == {}
        wakeup.wake()
        wakeup.wake()
        assert dict(poller.poll(timeout=0)) == {wakeup.fd: zmq.POLLIN}
    finally:
        wakeup.close()


def test_a_signal_handler_ends_a_poll_without_timeout() -> None:
    """pyzmq polls again after EINTR; the handler's wake is what ends this poll."""
    wakeup = Wakeup()
    poller = zmq.Poller()
    wakeup.register(poller)
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        wakeup.wake()

    previous = signal.signal(signal.SIGUSR1, handler)
    # Sent to the main thread while its poll (no timeout) blocks, or just before.
    timer = threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
    )
    try:
        timer.start()
        events = dict(poller.poll())
        timer.join()
        assert seen == [signal.SIGUSR1]
        assert events == {wakeup.fd: zmq.POLLIN}
    finally:
        signal.signal(signal.SIGUSR1, previous)
        wakeup.close()


def test_wake_never_blocks_on_a_full_pipe() -> None:
    wakeup = Wakeup()
    try:
        for _ in range(100_000):  # far beyond a pipe's buffer
            wakeup.wake()
        assert dict(poller_of(wakeup).poll(timeout=0)) == {wakeup.fd: zmq.POLLIN}
    finally:
        wakeup.close()


def poller_of(wakeup: Wakeup) -> zmq.Poller:
    poller = zmq.Poller()
    wakeup.register(poller)
    return poller
