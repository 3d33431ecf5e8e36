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
