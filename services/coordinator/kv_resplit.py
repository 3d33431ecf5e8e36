"""KV cache configs for a re-planned chain, with the block count the engine already has.

The engine's scheduler counts KV cache blocks once, at start (vLLM's EngineCore
._initialize_kv_caches). A chain rebuilt over new layer ranges must give every stage
exactly that many blocks. vLLM's own `get_kv_cache_configs` builds the per-stage
configs from the new stages' specs when `cache_config.num_gpu_blocks_override` holds
the engine's count (it then plans against that count, not the stages' free memory);
the resolved fields EngineCore sets after it (layout, hash block size, cache-hit
alignment) are copied from a config of the running chain.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from shared.vllm_bridge.kv_codec import decode_kv


def kv_configs_for_chain(
    vllm_config: Any, specs: list[dict[str, Any]], template: Any
) -> list[Any]:
    """One KVCacheConfig per stage spec, each with template.num_blocks blocks."""
    from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

    cache = copy.copy(vllm_config.cache_config)
    cache.num_gpu_blocks_override = template.num_blocks
    config = copy.copy(vllm_config)
    object.__setattr__(config, "cache_config", cache)
    configs = get_kv_cache_configs(config, specs, [0] * len(specs))
    for made in configs:
        if made.num_blocks != template.num_blocks:
            raise RuntimeError(
                f"vLLM's get_kv_cache_configs gave {made.num_blocks} blocks, not the "
                f"override {template.num_blocks} (cache_config.num_gpu_blocks_override): "
                "a re-planned chain cannot keep the engine's block count"
            )
        made.kv_cache_layout = template.kv_cache_layout
        made.hash_block_size = template.hash_block_size
        made.cache_hit_alignment_tokens = template.cache_hit_alignment_tokens
    return configs


def kv_configs_for_records(
    host: Any, running: Mapping[tuple[int, int], Any], chain: Sequence[Any]
) -> dict[tuple[int, int], Any]:
    """By layer range: configs for the registered stages of a re-planned chain, with the
    block count of the running chain's configs (`running`) and the engine host's config."""
    assert host is not None and host.vllm_config is not None, "the engine runs"
    template = next(iter(running.values()))
    specs = [decode_kv(r.info.kv_cache_specs) for r in chain]
    configs = kv_configs_for_chain(host.vllm_config, specs, template)
    return {r.layers: c for r, c in zip(chain, configs, strict=True)}
