"""Pure bookkeeping of M disjoint micro-batches that take turns through the stage chain.

Every running request belongs to exactly one micro-batch. Each engine step
schedules one micro-batch whose previous step has come back, so with M steps
in flight every stage holds different work. New requests join the micro-batch
whose turn it is only up to a fair share (so they spread to the lightest
ones); a micro-batch that grew two or more above the lightest hands requests
over before its step is scheduled. The coordinator may raise the number of
active micro-batches while serving (services/coordinator/micro_batch_control.py
says when); new ones start empty and fill through the same hand-over. No
sockets, no vLLM: unit-tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


class MicroBatches:
    """Which micro-batch each request is in, and which are in flight; engine thread only."""

    def __init__(self, count: int, capacity: int = 0) -> None:
        capacity = capacity or count
        if count < 1:
            raise ValueError(f"micro-batch count must be at least 1, got {count}")
        if capacity < count:
            raise ValueError(f"micro-batch capacity {capacity} is below the count {count}")
        self.count = count  # active micro-batches; grows up to capacity
        self.capacity = capacity
        self.group_of: dict[str, int] = {}
        self.in_flight = [0] * capacity
        self._turn = 0

    def grow(self, count: int) -> None:
        """Use `count` micro-batches from now on (never fewer than now, at most capacity)."""
        if not self.count <= count <= self.capacity:
            raise ValueError(
                f"micro-batches can grow from {self.count} up to {self.capacity}, not to {count}"
            )
        self.count = count

    # ------------------------------------------------------------ turns

    def next_group(self) -> int:
        """The next micro-batch in rotation with no step in flight."""
        for offset in range(self.count):
            group = (self._turn + offset) % self.count
            if self.in_flight[group] == 0:
                self._turn = group + 1
                return group
        # Every micro-batch is in flight: only possible with a queue deeper than M.
        group = self._turn % self.count
        self._turn = group + 1
        return group

    def started(self, group: int) -> None:
        self.in_flight[group] += 1

    def finished(self, group: int) -> None:
        self.in_flight[group] = max(0, self.in_flight[group] - 1)

    def reset_flight(self) -> None:
        """Forget every step in flight (the chain was rebuilt; they will never return)."""
        self.in_flight = [0] * self.capacity

    # ------------------------------------------------------------ membership

    def sizes(self, running: Iterable[str]) -> list[int]:
        sizes = [0] * self.capacity
        for rid in running:
            group = self.group_of.get(rid)
            if group is not None:
                sizes[group] += 1
        return sizes[: self.count]

    def members(self, group: int, running: Sequence[str]) -> list[str]:
        """Requests of `group` to schedule now, after handing surplus to the lightest group.

        Requests not assigned yet (resumed after preemption) join `group`.
        """
        for rid in running:
            self.group_of.setdefault(rid, group)
        mine = [rid for rid in running if self.group_of[rid] == group]
        if self.count == 1:
            return mine
        sizes = self.sizes(running)
        lightest = min(range(self.count), key=lambda g: (sizes[g], g))
        surplus = (sizes[group] - sizes[lightest]) // 2
        if lightest != group and sizes[group] - sizes[lightest] >= 2 and surplus > 0:
            # The most recently admitted requests move: they lose one turn, no more.
            for rid in mine[-surplus:]:
                self.group_of[rid] = lightest
            mine = mine[:-surplus]
        return mine

    def admission_cap(
        self, group: int, running: Sequence[str], num_waiting: int, max_seqs: int
    ) -> int:
        """How many requests `group` may hold after admitting new ones this turn."""
        sizes = self.sizes(running)
        others = sum(sizes) - sizes[group]
        share = math.ceil(min(len(running) + num_waiting, max_seqs) / self.count)
        return max(sizes[group], min(max_seqs - others, share))

    def assign(self, group: int, running_after: Iterable[str]) -> None:
        """Requests that are running in `group` after its turn (admitted ones included)."""
        for rid in running_after:
            self.group_of[rid] = group

    def forget_finished(self, running: Iterable[str]) -> None:
        """Drop every request that is no longer running (finished or preempted)."""
        alive = set(running)
        for rid in [r for r in self.group_of if r not in alive]:
            del self.group_of[rid]
