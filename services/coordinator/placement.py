"""Placement: which stage serves which contiguous layer range (pure logic, no sockets).

The pipeline runs at the pace of its slowest stage, so the planner minimises the
largest predicted time per step (a stage's compute for its layers at decode and
prefill sizes, plus the LM head on the last stage, plus its link) subject to every
stage's memory (weights of its layers, the embeddings on the first stage, the LM
head on the last, and a KV cache of `kv_tokens` tokens for each of its layers).
Pinned ranges (`--layers`) are kept as given; the other stages fill the gaps
between them, and stages the plan does not need become standbys.

Method: the smallest feasible bound T is found by bisection over the finitely many
times a stage can have; whether the unpinned stages cover the layers within T is
cover_search.py's question. At the best T, a dynamic programme over split points
spreads the layers so that stage times are as even as possible (least sum of
squares). The arithmetic of time and memory is placement_costs.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.coordinator.cover_search import MAX_UNPINNED, CoverSearch, Order
from services.coordinator.placement_costs import (
    GIB,
    ModelProfile,
    PlacementError,
    StageCapacity,
    StageCosts,
    size_text,
)

__all__ = [
    "GIB",
    "Assignment",
    "ModelProfile",
    "Placement",
    "PlacementError",
    "StageCapacity",
    "plan",
    "size_text",
]


@dataclass(frozen=True)
class Assignment:
    """One stage's place in the planned chain (immutable)."""

    stage: str
    start: int
    end: int
    pinned: bool
    step_s: float  # predicted time per step: compute plus link
    memory_bytes: int  # weights and KV cache of this range
    memory_limit: int


@dataclass(frozen=True)
class Placement:
    """The planned chain, in layer order, and the stages left as standbys."""

    chain: tuple[Assignment, ...]
    standby: tuple[str, ...]

    @property
    def step_s(self) -> float:
        return max(a.step_s for a in self.chain)

    @property
    def bottleneck(self) -> str:
        return max(self.chain, key=lambda a: a.step_s).stage


def plan(
    model: ModelProfile,
    stages: list[StageCapacity],
    *,
    kv_tokens: int,
    prefill_weight: float,
) -> Placement:
    """The chain that covers every layer and minimises the slowest stage's step time.

    A step is one decode-sized forward plus `prefill_weight` prefill-sized ones: the
    workload's prefill chunks per decode step (services/stage/capacity.py derives it
    from the probe's sizes and the ratio of prompt to generated tokens). kv_tokens:
    tokens of KV cache each stage must hold for each of its layers (the coordinator
    gives every stage the same block count). Raises PlacementError naming the
    missing layers and memory when no plan exists.
    """
    if prefill_weight < 0:
        raise PlacementError(f"prefill weight must be >= 0, got {prefill_weight}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlacementError(f"stage names must be unique; repeated: {', '.join(dup)}")
    costs = StageCosts(model, kv_tokens, prefill_weight)
    pinned, standby = _pinned(model, costs, [s for s in stages if s.pinned is not None])
    free = [s for s in stages if s.pinned is None]
    gaps = _gaps(model.num_layers, pinned)
    search = CoverSearch(model.num_layers, costs, free, [(a, b) for a, b, _ in pinned])
    if gaps:
        if pinned and len(free) > MAX_UNPINNED:
            raise PlacementError(
                f"beside pinned ranges, placement searches at most {MAX_UNPINNED} stages "
                f"without --layers, got {len(free)}; pin more stages' ranges with --layers"
            )
        if search.run(math.inf) is None:
            raise PlacementError(search.shortfall(model, kv_tokens))
    floor = max((costs.time(s, b - a, b == model.num_layers) for a, b, s in pinned), default=0.0)
    bounds = sorted(
        {floor}
        | {
            t
            for s in free
            for n in range(1, model.num_layers + 1)
            for t in (costs.time(s, n, False), costs.time(s, n, True))
            if t >= floor
        }
    )
    lo, hi = 0, len(bounds) - 1
    while gaps and lo < hi:  # the smallest feasible bound
        mid = (lo + hi) // 2
        if search.run(bounds[mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    bound = bounds[lo]
    order = search.run(bound) if gaps else []
    assert order is not None  # feasible at the largest bound, checked above
    spans = _even_out(model.num_layers, costs, bound, free, order, pinned)
    chain = tuple(
        Assignment(
            stage=s.name,
            start=a,
            end=b,
            pinned=s.pinned is not None,
            step_s=costs.time(s, b - a, b == model.num_layers),
            memory_bytes=costs.memory(b - a, a == 0, b == model.num_layers),
            memory_limit=s.memory_bytes,
        )
        for a, b, s in sorted(spans, key=lambda span: span[0])
    )
    used = {a.stage for a in chain}
    standby += [s.name for s in free if s.name not in used]
    return Placement(chain=chain, standby=tuple(standby))


Span = tuple[int, int, StageCapacity]


def _pinned(
    model: ModelProfile, costs: StageCosts, stages: list[StageCapacity]
) -> tuple[list[Span], list[str]]:
    """Pinned spans in layer order (one per range: the fastest that fits); the rest standby."""
    by_range: dict[tuple[int, int], list[StageCapacity]] = {}
    for s in stages:
        assert s.pinned is not None
        a, b = s.pinned
        if not 0 <= a < b <= model.num_layers:
            raise PlacementError(
                f"stage {s.name}: --layers {a}:{b} outside the model's {model.num_layers} layers"
            )
        by_range.setdefault((a, b), []).append(s)
    spans: list[Span] = []
    standby: list[str] = []
    for (a, b), group in sorted(by_range.items()):
        need = costs.memory(b - a, a == 0, b == model.num_layers)
        fits = [s for s in group if s.memory_bytes >= need]
        if not fits:
            s = group[0]
            raise PlacementError(
                f"stage {s.name} is pinned to layers {a}:{b}, which need {size_text(need)} "
                f"(weights and KV cache), but it may use {size_text(s.memory_bytes)}; raise "
                "its memory cap, pin fewer layers or lower the KV cache tokens (--max-model-len)"
            )
        best = min(fits, key=lambda s: costs.time(s, b - a, b == model.num_layers))
        if spans and spans[-1][1] > a:
            other = spans[-1]
            raise PlacementError(
                f"pinned ranges overlap: {other[2].name} holds {other[0]}:{other[1]}, "
                f"{best.name} holds {a}:{b}; change one stage's --layers"
            )
        spans.append((a, b, best))
        standby += [s.name for s in group if s is not best]
    return spans, standby


def _gaps(num_layers: int, pinned: list[Span]) -> list[tuple[int, int]]:
    gaps, position = [], 0
    for a, b, _ in pinned:
        if a > position:
            gaps.append((position, a))
        position = b
    if position < num_layers:
        gaps.append((position, num_layers))
    return gaps


def _even_out(
    num_layers: int,
    costs: StageCosts,
    bound: float,
    free: list[StageCapacity],
    order: Order,
    pinned: list[Span],
) -> list[Span]:
    """Keep each gap's stages and their order; spread its layers to even out stage times."""
    spans: list[Span] = list(pinned)
    for a, b in _gaps(num_layers, pinned):
        members = [free[i] for i, p, _ in order if a <= p < b]
        spans += _split_gap(num_layers, costs, bound, a, b, members)
    return spans


def _split_gap(
    num_layers: int,
    costs: StageCosts,
    bound: float,
    a: int,
    b: int,
    stages: list[StageCapacity],
) -> list[Span]:
    """Split [a, b) over `stages` in order: every time within bound, least sum of squares."""
    k, m = len(stages), b - a
    inf = math.inf
    # best[j][x]: least sum of squared times when the first j stages hold the first x layers.
    best = [[inf] * (m + 1) for _ in range(k + 1)]
    cut = [[0] * (m + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    limit = bound * (1 + 1e-9)
    for j, s in enumerate(stages, start=1):
        first, last = j == 1 and a == 0, j == k and b == num_layers
        for x in range(j, m + 1):
            for y in range(j - 1, x):
                if best[j - 1][y] == inf:
                    continue
                n = x - y
                t = costs.time(s, n, last)
                if t > limit or costs.memory(n, first, last) > s.memory_bytes:
                    continue
                total = best[j - 1][y] + t * t
                if total < best[j][x]:
                    best[j][x], cut[j][x] = total, y
    if best[k][m] == inf:  # cannot happen: the search found a split within bound
        raise PlacementError(f"internal: no split of layers {a}:{b} within the bound")
    spans: list[Span] = []
    x = m
    for j in range(k, 0, -1):
        y = cut[j][x]
        spans.append((a + y, a + x, stages[j - 1]))
        x = y
    return spans[::-1]
