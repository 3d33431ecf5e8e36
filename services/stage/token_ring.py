"""The first stage's end of the token ring (pure; no sockets, no vLLM).

Plans arrive from the coordinator ahead of the tokens they feed: a cached
request's new_token_ids end in placeholders (-1) and `plan.token_sources`
names the steps whose sampled tokens fill them. The last stage sends each
step's tokens straight here (wire.Tokens). A plan runs once every step it
names has reported; plans run in the order they came (later ones may finish
requests that earlier ones still schedule), so one waiting plan holds back
the rest.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

from shared import wire

PLACEHOLDER = wire.PLACEHOLDER
# Tokens kept for steps no plan has asked for yet: a few pipeline depths.
KEEP_STEPS = 1024

T = TypeVar("T")


class RingError(ValueError):
    """A plan's placeholders do not match the tokens its sources sampled."""


class TokenRing(Generic[T]):
    """Plans waiting for tokens, and tokens waiting for plans; the stage's main thread only.

    T is whatever the stage keeps with a plan (its header and frames).
    """

    def __init__(self) -> None:
        self.generation = 0
        self._tokens: OrderedDict[int, dict[str, list[int]] | None] = OrderedDict()
        self._queue: deque[tuple[wire.StepPlan, T]] = deque()

    def reset(self, generation: int) -> list[T]:
        """A new chain: forget every token and return the plans that were waiting."""
        self.generation = generation
        self._tokens.clear()
        dropped = [item for _, item in self._queue]
        self._queue.clear()
        return dropped

    def add_tokens(self, msg: wire.Tokens) -> bool:
        """Take one step's sampled tokens; False if they belong to another chain."""
        if msg.generation != self.generation:
            return False
        if msg.failed:
            self._tokens[msg.step_id] = None
        else:
            self._tokens[msg.step_id] = dict(
                zip(msg.req_ids, msg.sampled_token_ids, strict=False)
            )
        while len(self._tokens) > KEEP_STEPS:
            self._tokens.popitem(last=False)
        return True

    def step_failed(self, step_id: int) -> None:
        """A step this stage could not run: later plans must not wait for its tokens."""
        self._tokens[step_id] = None

    def push(self, plan: wire.StepPlan, item: T) -> None:
        self._queue.append((plan, item))

    def waiting(self) -> int:
        return len(self._queue)

    def pop_ready(self) -> tuple[wire.StepPlan, T] | None:
        """The oldest plan, its placeholders filled, once its sources have all reported."""
        if not self._queue:
            return None
        plan, item = self._queue[0]
        steps = {s for sources in plan.token_sources.values() for s in sources}
        if any(s not in self._tokens for s in steps):
            return None
        self._queue.popleft()
        fill(plan, self._tokens)
        return plan, item


def fill(plan: wire.StepPlan, tokens: dict[int, dict[str, list[int]] | None]) -> None:
    """Replace each cached request's trailing placeholders with its sources' tokens.

    A source that failed (None) leaves token 0: its request was failed at the
    coordinator, which ignores what this step computes for it.
    """
    if not plan.token_sources:
        return
    index = {rid: i for i, rid in enumerate(plan.cached.req_ids)}
    for rid, sources in plan.token_sources.items():
        i = index.get(rid)
        if i is None:
            raise RingError(f"token sources name {rid}, which the plan does not schedule")
        row = plan.cached.new_token_ids[i]
        values = []
        for step in sources:
            sampled = tokens.get(step)
            got = None if sampled is None else sampled.get(rid)
            values.append(got[-1] if got else 0)
        holes = [j for j, t in enumerate(row) if t == PLACEHOLDER]
        if len(holes) != len(values) or holes != list(range(len(row) - len(values), len(row))):
            raise RingError(
                f"{rid}: {len(values)} sampled tokens for placeholders at {holes} of {len(row)}"
            )
        row[len(row) - len(values) :] = values
    plan.token_sources = {}
