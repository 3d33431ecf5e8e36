"""One running test stack kept for the next test that asks for the same topology."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

from tests.e2e.cluster import Cluster


class StackCache:
    """Holds at most one started Cluster, keyed by its topology; pytest's main thread.

    A test asks for a key; the running stack is reused when the key matches and
    every process of it still runs, else it is stopped and a new one started. A test
    that fails while using the stack drops it, so no later test runs on a stack in
    an unknown state. Only for tests that neither kill nor change its processes.
    """

    def __init__(self) -> None:
        self.key: Hashable = None
        self.cluster: Cluster | None = None

    @contextmanager
    def use(self, key: Hashable, start: Callable[[], Cluster]) -> Iterator[Cluster]:
        """The running stack for `key` (started by `start()` when there is none)."""
        if self.cluster is not None and (key != self.key or not self.alive(self.cluster)):
            self.close()
        if self.cluster is None:
            cluster = start()
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            self.key, self.cluster = key, cluster
        try:
            yield self.cluster
        except BaseException:
            self.close()
            raise

    @staticmethod
    def alive(cluster: Cluster) -> bool:
        return all(proc.poll() is None for proc in cluster.procs.values())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.key, self.cluster = None, None
