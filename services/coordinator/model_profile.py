"""A model's sizes for placement, from its HF config.json (pure logic).

Counts the parameters of a Llama-style decoder layer (attention with grouped KV
heads, gated MLP, two norms), the embeddings and the LM head. Other decoder
architectures of the same shape family (Qwen, Mistral, Gemma) count the same way
to within their biases and extra norms, which placement can ignore.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.coordinator.placement_costs import ModelProfile
from services.stage.layers import head_cost_in_layers

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "half": 2, "float": 4}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a --dtype value."""
    try:
        return DTYPE_BYTES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPE_BYTES))}"
        ) from None


def profile_from_config(config: dict[str, Any], element_bytes: int) -> ModelProfile:
    """Sizes of the model's parts with weights and KV cache of `element_bytes` per value."""
    cfg = dict(config.get("text_config", config))
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    vocab = int(cfg["vocab_size"])
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    layer = attention + 3 * hidden * inter + 2 * hidden
    embed = vocab * hidden
    return ModelProfile(
        num_layers=int(cfg["num_hidden_layers"]),
        layer_bytes=layer * element_bytes,
        kv_bytes_per_token=2 * kv_heads * head_dim * element_bytes,
        embed_bytes=embed * element_bytes,
        head_bytes=(embed + hidden) * element_bytes,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
        head_layers=head_cost_in_layers(cfg, sampled_share=1.0),
    )


def profile_from_folder(model: str, dtype: str) -> ModelProfile:
    """The profile of the model in a local HF folder, at --dtype."""
    config = json.loads((Path(model) / "config.json").read_text())
    return profile_from_config(config, dtype_bytes(dtype))
