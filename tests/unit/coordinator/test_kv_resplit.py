"""KV cache configs for a re-planned chain keep the engine's block count (real vLLM code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from vllm.v1.core.kv_cache_utils import get_kv_cache_configs
from vllm.v1.kv_cache_interface import FullAttentionSpec

from services.coordinator.kv_resplit import kv_configs_for_chain
from shared.engine_settings import EngineSettings, build_vllm_config

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
