import pytest
import torch
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
)

from shared import wire
from shared.vllm_bridge.kv_codec import decode_kv, encode_kv


def test_spec_and_config_round_trip() -> None:
    spec = FullAttentionSpec(block_size=128, num_kv_heads=3, head_size=64, dtype=torch.bfloat16)
    specs = {"model.layers.0.self_attn.attn": spec}
    assert decode_kv(encode_kv(specs)) == specs
    config = KVCacheConfig(
        num_blocks=10,
        kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(layer_names=list(specs), kv_cache_spec=spec)],
    )
    assert decode_kv(encode_kv(config)) == config


def test_refuses_types_outside_vllm_kv_module() -> None:
    import msgspec

    evil = msgspec.msgpack.encode({"__cls__": "Popen", "fields": {"args": "sh"}})
    with pytest.raises(wire.WireError):
        decode_kv(evil)
    with pytest.raises(wire.WireError):
        decode_kv(msgspec.msgpack.encode({"__dtype__": "not_a_dtype"}))
