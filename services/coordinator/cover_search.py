"""How far sets of unplaced stages reach along the layers within a time bound (pure).

Layers are alike, so a stage's cost depends only on how many layers it holds and
whether it is first (embeddings) or last (LM head) in the chain. Without pinned
ranges the middle stages' order does not matter: a chain exists within the bound
when some first stage, some last stage and the middle stages with the largest
capacities hold every layer. Pinned ranges split the layers into gaps, and which
stage fills which gap matters; then the search runs over subsets of the unplaced
stages (exponential, so at most MAX_UNPINNED of them), keeping for each subset the
furthest layer it reaches, which is exact because reaching further never hurts.
"""

from __future__ import annotations

from services.coordinator.placement_costs import ModelProfile, StageCapacity, StageCosts, size_text

# The subset search is exponential in the unpinned stages; beyond this, pin some.
MAX_UNPINNED = 12

# (stage index among the unplaced stages, first layer, end layer), in chain order.
Order = list[tuple[int, int, int]]


class CoverSearch:
    """Which unplaced stages, in which order, cover the layers within a bound (one plan)."""

    def __init__(
        self,
        num_layers: int,
        costs: StageCosts,
        free: list[StageCapacity],
        pinned: list[tuple[int, int]],
    ) -> None:
        self.num_layers = num_layers
        self.costs = costs
        self.free = free
        self.jump = dict(pinned)
        self.starts = sorted(self.jump)
        self.furthest = 0  # the furthest layer the last run() reached

    def run(self, bound: float) -> Order | None:
        """The fewest stages covering every gap within `bound`, in chain order; None if none."""
        caps = [
            {
                (first, last): self.costs.cap(s, bound, first, last)
                for first in (False, True)
                for last in (False, True)
            }
            for s in self.free
        ]
        return self._subsets(caps) if self.starts else self._unpinned(caps)

    def _unpinned(self, caps: list[dict[tuple[bool, bool], int]]) -> Order | None:
        """No pinned ranges: the best first and last stage, then the largest middles."""
        n_layers, n = self.num_layers, len(self.free)
        middles = sorted(range(n), key=lambda i: -caps[i][False, False])
        best: list[int] | None = None
        self.furthest = 0
        for f in range(n):
            head = caps[f][True, False]
            if caps[f][True, True] >= n_layers:
                best = [f]
                break  # one stage: nothing has fewer
            if head < 1:
                continue
            reach = head + sum(caps[i][False, False] for i in range(n) if i != f)
            self.furthest = max(self.furthest, min(reach, n_layers - 1))
            for last in range(n):
                tail = caps[last][False, True]
                if last == f or tail < 1:
                    continue
                chosen, total = [f], head + tail
                for i in middles:
                    if total >= n_layers or caps[i][False, False] < 1:
                        break
                    if i not in (f, last):
                        chosen.append(i)
                        total += caps[i][False, False]
                if total >= n_layers and (best is None or len(chosen) + 1 < len(best)):
                    best = [*chosen, last]
        if best is None:
            return None
        self.furthest = n_layers
        order, p = [], 0
        for j, i in enumerate(best):
            left = len(best) - j - 1
            first, last = j == 0, left == 0
            q = n_layers if last else min(p + caps[i][first, False], n_layers - left)
            order.append((i, p, q))
            p = q
        return order

    def _subsets(self, caps: list[dict[tuple[bool, bool], int]]) -> Order | None:
        """Pinned ranges: for each subset of stages, the furthest layer it reaches."""
        n = len(self.free)
        reach = [-1] * (1 << n)
        parent: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * (1 << n)
        reach[0] = self._skip(0)
        self.furthest = reach[0]
        best: int | None = None
        for mask in range(1 << n):
            p = reach[mask]
            if p < 0:
                continue
            if p >= self.num_layers:
                if best is None or bin(mask).count("1") < bin(best).count("1"):
                    best = mask
                continue
            end = self._boundary(p)
            for i in range(n):
                if mask >> i & 1:
                    continue
                first = p == 0
                if end == self.num_layers and caps[i][first, True] >= end - p:
                    q = end
                else:
                    room = end - p - (1 if end == self.num_layers else 0)
                    q = p + min(caps[i][first, False], room)
                if q <= p:
                    continue
                nxt = mask | 1 << i
                skipped = self._skip(q)
                if skipped > reach[nxt]:
                    reach[nxt] = skipped
                    parent[nxt] = (mask, i, p, q)
                    self.furthest = max(self.furthest, skipped)
        if best is None:
            return None
        order, mask = [], best
        while mask:
            mask, i, p, q = parent[mask]
            order.append((i, p, q))
        return order[::-1]

    def _skip(self, position: int) -> int:
        while position in self.jump:
            position = self.jump[position]
        return position

    def _boundary(self, position: int) -> int:
        return next((a for a in self.starts if a > position), self.num_layers)

    def shortfall(self, model: ModelProfile, kv_tokens: int) -> str:
        """Why no stage set covers the layers (after run(inf) failed): what is missing."""
        start = self.furthest
        end = self._boundary(start)
        need = self.costs.memory(end - start, start == 0, end == self.num_layers)
        offered = sum(s.memory_bytes for s in self.free)
        return (
            f"no placement covers layers {start}:{end}: the stages' memory reaches layer "
            f"{start} at most ({size_text(offered)} offered by {len(self.free)} stages "
            f"without --layers; each layer needs {size_text(self.costs.per_layer_bytes)} "
            f"of weights and KV cache for {kv_tokens} tokens). Add a stage with at least "
            f"{size_text(need)} for them, raise a stage's memory cap, or lower the KV "
            "cache tokens (--max-model-len)"
        )
