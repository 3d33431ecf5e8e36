"""services/coordinator/kv_resize.py: the engine's KV cache shrinks in place (real vLLM).

A real vLLM Scheduler over a tiny model config; the resized KVCacheManager is compared
with the one vLLM's Scheduler builds itself for that block count, so a new argument of
vLLM's KVCacheManager fails here by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.coordinator.kv_resize import BlocksInUse, blocks_in_use, resize_kv_cache
from tests.unit.coordinator.test_kv_resplit import scheduler_of


def plain_fields(obj: Any) -> dict[str, Any]:
    """An object's attributes that are plain values (numbers, flags, strings)."""
    return {k: v for k, v in vars(obj).items() if isinstance(v, int | float | bool | str)}


def test_a_resized_manager_is_the_one_vllm_builds_for_that_count(tmp_path: Path) -> None:
    scheduler = scheduler_of(tmp_path / "a", 40)
    assert scheduler.kv_cache_manager.block_pool.num_gpu_blocks == 40
    resize_kv_cache(scheduler, 25)
    fresh = scheduler_of(tmp_path / "b", 25)
    got, want = scheduler.kv_cache_manager, fresh.kv_cache_manager
    assert plain_fields(got) == plain_fields(want)
    assert plain_fields(got.block_pool) == plain_fields(want.block_pool)
    assert got.block_pool.get_num_free_blocks() == 24  # the null block stays aside
    assert scheduler.kv_cache_config.num_blocks == 25
    assert scheduler.cache_config.num_gpu_blocks == 25
    assert [type(m) for m in got.coordinator.single_type_managers] == [
        type(m) for m in want.coordinator.single_type_managers
    ]


def test_the_new_pool_hands_out_only_ids_below_its_count(tmp_path: Path) -> None:
    scheduler = scheduler_of(tmp_path, 40)
    resize_kv_cache(scheduler, 10)
    pool = scheduler.kv_cache_manager.block_pool
    ids = [b.block_id for b in pool.get_new_blocks(pool.get_num_free_blocks())]
    assert sorted(ids) == list(range(1, 10))


def test_no_resize_while_a_request_holds_blocks(tmp_path: Path) -> None:
    scheduler = scheduler_of(tmp_path, 40)
    scheduler.kv_cache_manager.block_pool.get_new_blocks(3)
    assert blocks_in_use(scheduler) == 3
    with pytest.raises(BlocksInUse, match="3 KV cache blocks"):
        resize_kv_cache(scheduler, 10)
    assert scheduler.kv_cache_manager.block_pool.num_gpu_blocks == 40
