"""Which steps in flight will sample the tokens a new plan still lacks (pure; no vLLM).

With async scheduling the coordinator plans a request's next step before the
step in flight has sampled its token: the plan ends in a placeholder, and the
first stage fills it from the token ring (the last stage sends it each step's
sampled tokens). This bookkeeping names, for every placeholder, the step whose
Tokens message carries it. vLLM's AsyncScheduler counts a request's tokens in
flight (`num_output_placeholders`); the steps that sample them are the last
that many steps which produced a token for it, so that count is the truth and
this class only remembers step ids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


class MissingSource(RuntimeError):
    """A plan needs more tokens than there are steps in flight to sample them (a bug)."""


@dataclass(frozen=True)
class Row:
    """One scheduled request of a step, as the scheduler left it after scheduling."""

    req_id: str
    in_flight: int  # tokens sampled by earlier steps that the scheduler has not seen yet
    needed: int  # placeholders at the end of this step's new_token_ids
    produces: bool  # this step samples a token for it (not a partial prefill chunk)


class TokenSources:
    """Step ids sampling each request's tokens in flight; engine thread only."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[int]] = {}

    def plan(self, step_id: int, rows: Iterable[Row]) -> dict[str, list[int]]:
        """Sources of one step's placeholders; records what this step will sample."""
        sources: dict[str, list[int]] = {}
        for row in rows:
            pending = self._pending.get(row.req_id)
            if pending is None:
                pending = self._pending[row.req_id] = deque()
            while len(pending) > max(0, row.in_flight):
                pending.popleft()  # sampled tokens the scheduler has taken in
            if row.needed > len(pending):
                raise MissingSource(
                    f"step {step_id}: request {row.req_id} needs {row.needed} tokens in "
                    f"flight but only steps {list(pending)} sample any"
                )
            if row.needed:
                sources[row.req_id] = list(pending)[len(pending) - row.needed :]
            if row.produces:
                pending.append(step_id)
        return sources

    def forget(self, req_ids: Iterable[str]) -> None:
        """Requests that finished: nothing more will be planned for them."""
        for rid in req_ids:
            self._pending.pop(rid, None)

    def clear(self) -> None:
        """Every step in flight is lost (the chain was rebuilt)."""
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)
