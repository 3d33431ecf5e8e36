"""Shrink the engine's KV cache in place, while no request holds a block.

vLLM counts KV cache blocks once, when EngineCore starts: the scheduler's
KVCacheManager (its BlockPool, watermark and config) is built for that count. A chain
rebuilt after a loss may include a stage that cannot hold as many blocks for its new
layers (a re-plan gave it more layers; its --kv-cache-gb stays the same). The engine
then takes the smaller count: recovery has preempted every running request
(reset_prefix_cache(reset_running_requests=True) frees their blocks and the prefix
cache), so the scheduler's KVCacheManager can be built again, as vLLM's Scheduler
builds it, for fewer blocks, and the requests resume by recompute.
"""

from __future__ import annotations

import copy
from typing import Any


class BlocksInUse(RuntimeError):
    """The KV cache cannot be resized while a request holds blocks."""


def blocks_in_use(scheduler: Any) -> int:
    """Blocks held by requests (the null block BlockPool keeps aside is not counted)."""
    pool = scheduler.kv_cache_manager.block_pool
    return int(pool.num_gpu_blocks) - 1 - int(pool.get_num_free_blocks())


def resize_kv_cache(scheduler: Any, num_blocks: int) -> None:
    """Give vLLM's scheduler a KVCacheManager of `num_blocks` blocks (engine thread).

    The arguments are those vLLM's Scheduler.__init__ passes (test_kv_resize.py checks
    a resized manager against one vLLM builds for that count).
    """
    from vllm.v1.core.kv_cache_manager import KVCacheManager

    used = blocks_in_use(scheduler)
    if used:
        raise BlocksInUse(f"{used} KV cache blocks are still held by requests")
    config = copy.deepcopy(scheduler.kv_cache_config)
    config.num_blocks = num_blocks
    scheduler.kv_cache_manager = KVCacheManager(
        kv_cache_config=config,
        max_model_len=scheduler.max_model_len,
        max_in_flight_tokens=scheduler.vllm_config.max_in_flight_tokens,
        enable_caching=scheduler.cache_config.enable_prefix_caching,
        use_eagle=scheduler.use_eagle_block_drop,
        num_prefill_lookahead=scheduler.num_prefill_lookahead,
        log_stats=scheduler.log_stats,
        enable_kv_cache_events=scheduler.enable_kv_cache_events,
        dcp_world_size=scheduler.dcp_world_size,
        pcp_world_size=1,
        scheduler_block_size=scheduler.block_size,
        hash_block_size=scheduler.hash_block_size,
        metrics_collector=scheduler.kv_metrics_collector,
        watermark=scheduler.scheduler_config.watermark,
        enable_mamba_shared_prefix_checkpoint=(
            scheduler.cache_config.enable_mamba_shared_prefix_checkpoint
        ),
    )
    scheduler.kv_cache_config = config
    scheduler.cache_config.num_gpu_blocks = num_blocks
    if scheduler.connector is not None:
        scheduler.connector.bind_kv_cache_manager(scheduler.kv_cache_manager)
