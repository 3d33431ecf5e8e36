"""What placement weighs: a model's parts, a stage's capacity, their time and memory (pure).

A step on a stage is one decode-sized forward of its layers plus `prefill_weight`
prefill-sized ones (the workload's prefill chunks per decode step), the LM head on
the last stage, and the stage's link. Its memory is the weights of its layers, the
embeddings on the first stage, the LM head on the last, and a KV cache of
`kv_tokens` tokens for each of its layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1 << 30


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
    head_s: float | None = None  # final norm + LM head at decode size (None: estimated)

    def __post_init__(self) -> None:
        if self.decode_s <= 0 or self.prefill_s <= 0 or self.link_s < 0 or (self.head_s or 0) < 0:
            raise ValueError(f"stage {self.name}: speeds must be > 0, link and head times >= 0")
        if self.memory_bytes < 0:
            raise ValueError(f"stage {self.name}: memory must be >= 0")


class StageCosts:
    """Time and memory of a stage for n layers at a chain position (pure; one plan)."""

    def __init__(self, model: ModelProfile, kv_tokens: int, prefill_weight: float) -> None:
        self.model = model
        self.per_layer_bytes = model.layer_bytes + kv_tokens * model.kv_bytes_per_token
        self.prefill_weight = prefill_weight

    def layer_s(self, s: StageCapacity) -> float:
        return s.decode_s + self.prefill_weight * s.prefill_s

    def head_s(self, s: StageCapacity) -> float:
        # The head runs on sampled tokens: every token of a decode step, one per
        # sequence of a prefill chunk (negligible beside the chunk's layers). Measured
        # when the probe timed it, else estimated from the multiply-adds.
        if s.head_s is not None:
            return s.head_s
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
