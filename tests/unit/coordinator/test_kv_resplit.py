"""KV cache configs for a re-planned chain keep the engine's block count (real vLLM code)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from vllm.v1.core.kv_cache_utils import generate_scheduler_kv_cache_config, get_kv_cache_configs
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec
from vllm.v1.structured_output import StructuredOutputManager

from services.coordinator.kv_resplit import (
    ChainKv,
    ChainSize,
    Holding,
    chain_size,
    kv_configs_for_chain,
)
from services.coordinator.pipeline import PipelineFailed
from shared.engine_settings import EngineSettings, build_vllm_config
from shared.vllm_bridge.kv_codec import encode_kv

LAYERS = 6


def vllm_config(tmp_path: Path) -> Any:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "float32",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    engine = EngineSettings(model=str(tmp_path), max_model_len=256, load_format="dummy")
    built = build_vllm_config(engine, pipeline_size=1)
    built.cache_config.kv_cache_layout = "NHD"  # EngineCore resolves it before any config
    return built


def specs(start: int, end: int) -> dict[str, FullAttentionSpec]:
    spec = FullAttentionSpec(block_size=16, num_kv_heads=2, head_size=16, dtype=torch.float32)
    return {f"model.layers.{i}.self_attn.attn": spec for i in range(start, end)}


def scheduler_of(tmp_path: Path, num_blocks: int) -> Any:
    """vLLM's Scheduler for two stages of three layers, num_blocks blocks each."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = vllm_config(tmp_path)
    page = specs(0, 1)["model.layers.0.self_attn.attn"].page_size_bytes
    memory = [num_blocks * 3 * page] * 2
    configs = get_kv_cache_configs(config, [specs(0, 3), specs(3, 6)], memory)
    scheduler_config = generate_scheduler_kv_cache_config(configs)
    config.cache_config.num_gpu_blocks = scheduler_config.num_blocks
    return Scheduler(
        config, scheduler_config, StructuredOutputManager(config), block_size=16, log_stats=True
    )


def test_a_new_split_gets_the_running_chains_block_count(tmp_path: Path) -> None:
    config = vllm_config(tmp_path)
    page = specs(0, 1)["model.layers.0.self_attn.attn"].page_size_bytes
    # The running chain: two stages, the first with room for 40 blocks, the second 50.
    first = get_kv_cache_configs(config, [specs(0, 3), specs(3, 6)], [40 * 3 * page, 50 * 3 * page])
    template = first[0]
    template.kv_cache_layout = "NHD"
    template.hash_block_size = 16
    assert template.num_blocks == 40, "vLLM's get_kv_cache_configs: blocks = memory / pages"
    # Re-planned: the second stage is gone, two stages hold 0:1 and 1:6 now.
    made = kv_configs_for_chain(config, [specs(0, 1), specs(1, 6)], template)
    assert [c.num_blocks for c in made] == [40, 40]
    held = [sorted(n for g in c.kv_cache_groups for n in g.layer_names) for c in made]
    assert held == [sorted(specs(0, 1)), sorted(specs(1, 6))]
    tensor_layers = [sorted(n for t in c.kv_cache_tensors for n in t.layers) for c in made]
    assert tensor_layers == held
    assert all(c.kv_cache_layout == "NHD" and c.hash_block_size == 16 for c in made)
    # The engine's own config is untouched.
    assert config.cache_config.num_gpu_blocks_override is None


def test_a_chain_runs_with_the_engines_count_unless_a_stage_holds_fewer() -> None:
    held = [Holding("a", (0, 10), 136), Holding("b", (10, 30), 68)]
    assert chain_size(68, held) == ChainSize(68, False, "")
    assert chain_size(50, held) == ChainSize(50, False, "")  # never grows
    assert chain_size(136, held) == ChainSize(
        68, True, "b holds 68 KV cache blocks for layers 10:30, the engine had 136"
    )


def record(name: str, start: int, end: int, blocks: int) -> Any:
    """A registered stage with KV memory for `blocks` blocks of its layers."""
    page = specs(0, 1)["model.layers.0.self_attn.attn"].page_size_bytes
    memory = blocks * (end - start) * page
    info = SimpleNamespace(kv_cache_specs=encode_kv(specs(start, end)), available_kv_bytes=memory)
    return SimpleNamespace(name=name, layers=(start, end), info=info)


def running_chain(tmp_path: Path, blocks: int) -> tuple[Any, dict[Any, Any]]:
    """A scheduler of `blocks` blocks and the configs of its chain 0:3, 3:6."""
    scheduler = scheduler_of(tmp_path, blocks)
    page = specs(0, 1)["model.layers.0.self_attn.attn"].page_size_bytes
    made = get_kv_cache_configs(
        scheduler.vllm_config, [specs(0, 3), specs(3, 6)], [blocks * 3 * page] * 2
    )
    for config in made:
        config.kv_cache_layout, config.hash_block_size = "NHD", 16
    return scheduler, {(0, 3): made[0], (3, 6): made[1]}


def test_a_re_planned_stage_with_less_kv_memory_shrinks_the_engine(tmp_path: Path) -> None:
    scheduler, configs = running_chain(tmp_path, 40)
    sizer = ChainKv(scheduler.vllm_config, scheduler, configs)
    # Re-planned: the survivor of 3:6 holds 0:6 now; its memory holds 20 blocks of 6 layers.
    sizer.prepare([record("b", 0, 6, 20)])
    assert scheduler.kv_cache_manager.block_pool.num_gpu_blocks == 20
    assert configs[(0, 6)].num_blocks == 20
    assert sorted(n for g in configs[(0, 6)].kv_cache_groups for n in g.layer_names) == sorted(
        specs(0, 6)
    )
    # Never more than the stage's memory: the tensors are what its 20 blocks take.
    assert max(t.size for t in configs[(0, 6)].kv_cache_tensors) == record(
        "b", 0, 6, 20
    ).info.available_kv_bytes


def test_a_chain_that_holds_the_engines_count_keeps_it(tmp_path: Path) -> None:
    scheduler, configs = running_chain(tmp_path, 40)
    ChainKv(scheduler.vllm_config, scheduler, configs).prepare(
        [record("a", 0, 1, 90), record("b", 1, 6, 45)]
    )
    assert scheduler.kv_cache_manager.block_pool.num_gpu_blocks == 40
    assert [configs[r].num_blocks for r in ((0, 1), (1, 6))] == [40, 40]


def test_a_stage_that_cannot_hold_one_request_refuses_the_chain(tmp_path: Path) -> None:
    scheduler, configs = running_chain(tmp_path, 40)
    # max_model_len 256 needs 16 blocks of 16 tokens; this stage has room for 4.
    with pytest.raises(PipelineFailed, match="b cannot hold .* raise its --kv-cache-gb"):
        ChainKv(scheduler.vllm_config, scheduler, configs).prepare([record("b", 0, 6, 4)])
    assert scheduler.kv_cache_manager.block_pool.num_gpu_blocks == 40
    assert (0, 6) not in configs
