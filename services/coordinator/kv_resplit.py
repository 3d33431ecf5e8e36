"""KV cache configs for a rebuilt chain: the engine's block count, or fewer if a stage needs.

The engine's scheduler counts KV cache blocks once, at start (vLLM's EngineCore
._initialize_kv_caches), and every stage must hold at least that many. A chain rebuilt
over new layer ranges (a re-plan) or from standbys may include a stage whose KV memory
(`Register.available_kv_bytes`: --kv-cache-gb on a CPU, profiled on a GPU; a configured
stage offers no more than it holds) cannot hold that many blocks for its layers. So each
chain the engine adopts is sized first: vLLM's `get_kv_cache_configs` says how many blocks
each stage holds for its layers; when the fewest is below the engine's count, the engine
shrinks its KV cache to it (kv_resize.py) before the chain is configured, never asking a
stage for more than its memory holds. The configs are then made with that count
(`cache_config.num_gpu_blocks_override`), the resolved fields EngineCore sets after it
(layout, hash block size, cache-hit alignment) copied from a config of the running chain.
A stage configured earlier with more blocks uses the first ones (stage/membership.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.coordinator.kv_resize import resize_kv_cache
from services.coordinator.pipeline import PipelineFailed
from shared.vllm_bridge.kv_codec import decode_kv

log = logging.getLogger("layerbus.coordinator")


@dataclass(frozen=True)
class Holding:
    """How many KV cache blocks one stage of a chain holds for its layers; immutable."""

    name: str
    layers: tuple[int, int]
    blocks: int


@dataclass(frozen=True)
class ChainSize:
    """The block count a chain runs with and whether the engine must shrink to it; immutable."""

    num_blocks: int
    shrink: bool
    why: str  # which stage limits it, when it shrinks


def chain_size(engine_blocks: int, holdings: Sequence[Holding]) -> ChainSize:
    """The engine's count if every stage holds it, else the fewest any stage holds (pure)."""
    smallest = min(holdings, key=lambda h: h.blocks)
    if smallest.blocks >= engine_blocks:
        return ChainSize(engine_blocks, False, "")
    why = (
        f"{smallest.name} holds {smallest.blocks} KV cache blocks for layers "
        f"{smallest.layers[0]}:{smallest.layers[1]}, the engine had {engine_blocks}"
    )
    return ChainSize(smallest.blocks, True, why)


def _with_override(vllm_config: Any, num_blocks: int | None) -> Any:
    cache = copy.copy(vllm_config.cache_config)
    cache.num_gpu_blocks_override = num_blocks
    config = copy.copy(vllm_config)
    object.__setattr__(config, "cache_config", cache)
    return config


def stage_blocks(vllm_config: Any, specs: dict[str, Any], available_bytes: int) -> int:
    """Blocks a stage's KV memory holds for its layers, as vLLM sizes them; ValueError (vLLM's
    message) when not even one request of max_model_len fits."""
    from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

    config = _with_override(vllm_config, None)
    return int(get_kv_cache_configs(config, [specs], [available_bytes])[0].num_blocks)


def kv_configs_for_chain(
    vllm_config: Any, specs: list[dict[str, Any]], template: Any, num_blocks: int | None = None
) -> list[Any]:
    """One KVCacheConfig per stage spec, each with num_blocks blocks (default: the
    template's, the running chain's)."""
    from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

    count = template.num_blocks if num_blocks is None else num_blocks
    config = _with_override(vllm_config, count)
    configs = get_kv_cache_configs(config, specs, [0] * len(specs))
    for made in configs:
        if made.num_blocks != count:
            raise RuntimeError(
                f"vLLM's get_kv_cache_configs gave {made.num_blocks} blocks, not the "
                f"override {count} (cache_config.num_gpu_blocks_override): "
                "a rebuilt chain cannot have the block count it needs"
            )
        made.kv_cache_layout = template.kv_cache_layout
        made.hash_block_size = template.hash_block_size
        made.cache_hit_alignment_tokens = template.cache_hit_alignment_tokens
    return configs


class ChainKv:
    """Sizes each chain the engine adopts and makes its KV cache configs; engine thread.

    `link.kv_configs` (by layer range) gets a config for every stage of the chain, of the
    block count the chain runs with; the scheduler shrinks first when that is fewer.
    """

    def __init__(self, vllm_config: Any, scheduler: Any, kv_configs: dict[Any, Any]) -> None:
        self.vllm_config = vllm_config
        self.scheduler = scheduler
        self.kv_configs = kv_configs

    def engine_blocks(self) -> int:
        return int(self.scheduler.kv_cache_config.num_blocks)

    def prepare(self, chain: Sequence[Any]) -> None:
        """Size `chain` and put its configs in kv_configs; PipelineFailed if a stage cannot
        hold one request of max_model_len (the chain is refused, the engine waits)."""
        specs = [decode_kv(r.info.kv_cache_specs) for r in chain]
        holdings = []
        for record, spec in zip(chain, specs, strict=True):
            try:
                blocks = stage_blocks(self.vllm_config, spec, record.info.available_kv_bytes)
            except ValueError as err:
                raise PipelineFailed(
                    f"{record.name} cannot hold the KV cache of one request for layers "
                    f"{record.layers[0]}:{record.layers[1]}: raise its --kv-cache-gb "
                    f"(LAYERBUS_STAGE_KV_CACHE_GB) or lower --max-model-len ({err})"
                ) from None
            holdings.append(Holding(record.name, record.layers, blocks))
        size = chain_size(self.engine_blocks(), holdings)
        if size.shrink:
            log.warning(
                "the KV cache shrinks from %d to %d blocks: %s; requests resume by recompute",
                self.engine_blocks(),
                size.num_blocks,
                size.why,
            )
            resize_kv_cache(self.scheduler, size.num_blocks)
        template = next(iter(self.kv_configs.values()))
        configs = kv_configs_for_chain(self.vllm_config, specs, template, size.num_blocks)
        for record, made in zip(chain, configs, strict=True):
            self.kv_configs[record.layers] = made
