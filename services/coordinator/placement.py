"""Placement: which stage serves which contiguous layer range (pure logic, no sockets).

The pipeline runs at the pace of its slowest stage, so the planner minimises the
largest predicted time per step (a stage's compute for its layers at decode and
prefill sizes, plus the LM head on the last stage, plus its link) subject to every
stage's memory (weights of its layers, the embeddings on the first stage, the LM
head on the last, and a KV cache of `kv_tokens` tokens for each of its layers).
Pinned ranges (`--layers`) are kept as given; the other stages fill the gaps
between them, and stages the plan does not need become standbys.

Method: the smallest feasible bound T is found by bisection over the finitely many
times a stage can have. Feasibility at T is a search over subsets of the unpinned
stages ("how far along the layers can these stages reach, each within T and its
memory"), exact because layers are alike: only the first and last position of the
chain cost more. At the best T, a dynamic programme over split points spreads the
layers so that stage times are as even as possible (least sum of squares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1 << 30
# The subset search is exponential in the unpinned stages; beyond this, pin some.
MAX_UNPINNED = 12


def size_text(n: float) -> str:
    """Bytes for a person: GiB above 0.1 GiB, else MiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.1f} MiB"


class PlacementError(ValueError):
    """No placement exists (or the input is inconsistent); the message says what is missing."""


@dataclass(frozen=True)
class ModelProfile:
    """Sizes and relative costs of one model's parts, as placement needs them (immutable)."""

    num_layers: int
    layer_bytes: int  # weights of one decoder layer
    kv_bytes_per_token: int  # KV cache of one decoder layer per token
    embed_bytes: int  # token embeddings (first stage)
    head_bytes: int  # final norm + LM head (last stage)
    tied_embeddings: bool  # the LM head is the embedding matrix: one copy when first is last
    head_layers: float  # LM head compute per sampled token, in decoder layers

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.layer_bytes < 0 or self.kv_bytes_per_token < 0:
            raise ValueError(f"model profile: bad sizes {self}")

    def extra_bytes(self, first: bool, last: bool) -> int:
        """Weights besides the decoder layers on a stage at this position."""
        extra = (self.embed_bytes if first else 0) + (self.head_bytes if last else 0)
        if first and last and self.tied_embeddings:
            extra -= min(self.embed_bytes, self.head_bytes)
        return extra


@dataclass(frozen=True)
class StageCapacity:
    """One stage as the planner sees it: memory, measured speed, link, optional pinned range."""

    name: str
    memory_bytes: int  # for weights and KV cache
    decode_s: float  # one decoder layer's forward at decode size, seconds
    prefill_s: float  # one decoder layer's forward at prefill size, seconds
    link_s: float = 0.0  # what each step spends on this stage's link
    pinned: tuple[int, int] | None = None  # --layers START:END

    def __post_init__(self) -> None:
        if self.decode_s <= 0 or self.prefill_s <= 0 or self.link_s < 0:
            raise ValueError(f"stage {self.name}: speeds must be > 0 and link time >= 0")
        if self.memory_bytes < 0:
            raise ValueError(f"stage {self.name}: memory must be >= 0")


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


class _Costs:
    """Time and memory of a stage for n layers at a chain position (pure; one plan)."""

    def __init__(self, model: ModelProfile, kv_tokens: int, prefill_weight: float) -> None:
        self.model = model
        self.per_layer_bytes = model.layer_bytes + kv_tokens * model.kv_bytes_per_token
        self.prefill_weight = prefill_weight

    def layer_s(self, s: StageCapacity) -> float:
        return s.decode_s + self.prefill_weight * s.prefill_s

    def head_s(self, s: StageCapacity) -> float:
        # The head runs on sampled tokens: every token of a decode step, one per
        # sequence of a prefill chunk (negligible beside the chunk's layers).
        return self.model.head_layers * s.decode_s

    def time(self, s: StageCapacity, n: int, last: bool) -> float:
        return n * self.layer_s(s) + (self.head_s(s) if last else 0.0) + s.link_s

    def memory(self, n: int, first: bool, last: bool) -> int:
        return n * self.per_layer_bytes + self.model.extra_bytes(first, last)

    def cap(self, s: StageCapacity, bound: float, first: bool, last: bool) -> int:
        """The most layers s may hold within time `bound` and its memory."""
        room = s.memory_bytes - self.model.extra_bytes(first, last)
        if room < 0:
            return 0
        by_memory = room // self.per_layer_bytes if self.per_layer_bytes else self.model.num_layers
        spare = bound - s.link_s - (self.head_s(s) if last else 0.0)
        by_time = (
            self.model.num_layers
            if math.isinf(bound)
            else math.floor(spare / self.layer_s(s) * (1 + 1e-12))
        )
        return max(0, min(by_memory, by_time, self.model.num_layers))


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
    costs = _Costs(model, kv_tokens, prefill_weight)
    pinned, standby = _pinned(model, costs, [s for s in stages if s.pinned is not None])
    free = [s for s in stages if s.pinned is None]
    gaps = _gaps(model.num_layers, pinned)
    search = _Search(model.num_layers, costs, free, pinned)
    if gaps:
        if len(free) > MAX_UNPINNED:
            raise PlacementError(
                f"placement searches at most {MAX_UNPINNED} stages without --layers, got "
                f"{len(free)}; pin some stages' ranges with --layers"
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
    model: ModelProfile, costs: _Costs, stages: list[StageCapacity]
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


class _Search:
    """How far subsets of the unpinned stages reach within a time bound (one plan)."""

    def __init__(
        self, num_layers: int, costs: _Costs, free: list[StageCapacity], pinned: list[Span]
    ) -> None:
        self.num_layers = num_layers
        self.costs = costs
        self.free = free
        self.jump = {a: b for a, b, _ in pinned}
        self.starts = sorted(self.jump)
        self.furthest = 0

    def _skip(self, position: int) -> int:
        while position in self.jump:
            position = self.jump[position]
        return position

    def _boundary(self, position: int) -> int:
        return next((a for a in self.starts if a > position), self.num_layers)

    def run(self, bound: float) -> list[tuple[int, int, int]] | None:
        """(stage index, start, end) in chain order reaching the last layer, fewest stages."""
        n = len(self.free)
        caps = [
            {
                (first, last): self.costs.cap(s, bound, first, last)
                for first in (False, True)
                for last in (False, True)
            }
            for s in self.free
        ]
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


def _even_out(
    num_layers: int,
    costs: _Costs,
    bound: float,
    free: list[StageCapacity],
    order: list[tuple[int, int, int]],
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
    costs: _Costs,
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
