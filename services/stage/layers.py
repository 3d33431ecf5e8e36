"""Map a stage's layer range onto vLLM's pipeline-parallel partition (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass


class LayerRangeError(ValueError):
    """A --layers value that does not fit the model."""


@dataclass(frozen=True)
class LocalPartition:
    """The vLLM pipeline rank/size and VLLM_PP_LAYER_PARTITION that load [start, end)."""

    rank: int
    size: int
    partition: tuple[int, ...]

    @property
    def env_value(self) -> str:
        return ",".join(str(p) for p in self.partition)


def parse_layers(text: str, num_layers: int) -> tuple[int, int]:
    """Parse 'START:END' (END exclusive; empty END means the last layer)."""
    start_text, sep, end_text = text.partition(":")
    if not sep:
        raise LayerRangeError(f"--layers {text!r}: expected START:END, e.g. 0:15")
    try:
        start = int(start_text) if start_text else 0
        end = int(end_text) if end_text else num_layers
    except ValueError:
        raise LayerRangeError(f"--layers {text!r}: START and END must be integers") from None
    if not 0 <= start < end <= num_layers:
        raise LayerRangeError(
            f"--layers {text!r}: need 0 <= START < END <= {num_layers} "
            f"(the model has {num_layers} layers)"
        )
    return start, end


def local_partition(start: int, end: int, num_layers: int) -> LocalPartition:
    """Pretend the model is split into [0,start) [start,end) [end,L) and we are the middle."""
    parts: list[int] = []
    if start > 0:
        parts.append(start)
    rank = len(parts)
    parts.append(end - start)
    if end < num_layers:
        parts.append(num_layers - end)
    return LocalPartition(rank=rank, size=len(parts), partition=tuple(parts))


def even_split(num_layers: int, num_stages: int) -> list[tuple[int, int]]:
    """Contiguous ranges covering all layers, earlier stages taking the remainder."""
    if not 1 <= num_stages <= num_layers:
        raise LayerRangeError(f"cannot split {num_layers} layers into {num_stages} stages")
    base, extra = divmod(num_layers, num_stages)
    ranges, start = [], 0
    for i in range(num_stages):
        size = base + (1 if i < extra else 0)
        ranges.append((start, start + size))
        start += size
    return ranges


def balanced_split(num_layers: int, num_stages: int, head_cost: float) -> list[tuple[int, int]]:
    """Contiguous ranges whose compute is as even as possible.

    Every decoder layer costs 1; the last stage also runs the final norm and
    the LM head over the whole vocabulary, which costs `head_cost` layers (for
    a small model with a large vocabulary that is several layers: SmolLM2-135M's
    head weighs about 4 of its 30 layers when half the tokens are sampled).
    Minimises the busiest stage's cost, since the pipeline runs at the pace of
    its slowest stage.
    """
    if not 1 <= num_stages <= num_layers:
        raise LayerRangeError(f"cannot split {num_layers} layers into {num_stages} stages")
    # best[k][n]: the least possible maximum cost when the first n layers form k stages.
    inf = float("inf")
    best = [[inf] * (num_layers + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (num_layers + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for k in range(1, num_stages + 1):
        for n in range(k, num_layers + 1):
            for m in range(k - 1, n):
                cost = n - m + (head_cost if n == num_layers and k == num_stages else 0.0)
                worst = max(best[k - 1][m], cost)
                if worst < best[k][n]:
                    best[k][n], cut[k][n] = worst, m
    ranges, end = [], num_layers
    for k in range(num_stages, 0, -1):
        start = cut[k][end]
        ranges.append((start, end))
        end = start
    return ranges[::-1]


# The LM head runs only where a token is sampled (the last prompt position and each
# generated token); the decoder layers run on every prompt token too. With prompts about
# as long as the outputs (the benchmark's 128 in / 128 out), the head sees half the tokens.
SAMPLED_SHARE = 0.5


def head_cost_in_layers(config: dict[str, object], sampled_share: float = SAMPLED_SHARE) -> float:
    """The LM head's cost in units of one decoder layer's (HF config).

    Multiply-adds per token of the head over a layer's, times the share of the
    layers' tokens that reach the head. Measured on SmolLM2-135M at 128/128 on a
    CPU: this gives 4 layers, and the stages' busy times put it at 3-5.
    """
    cfg = dict(config.get("text_config", config))  # type: ignore[call-overload]
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    inter = int(cfg.get("intermediate_size", 4 * hidden))
    vocab = int(cfg["vocab_size"])
    kv_dim = hidden * kv_heads // heads
    layer = hidden * (hidden + 2 * kv_dim) + hidden * hidden + 3 * hidden * inter
    return hidden * vocab / layer * sampled_share
