"""Model sizes for placement from an HF config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.coordinator.model_profile import dtype_bytes, profile_from_config, profile_from_folder

SMOLLM2 = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


def test_smollm2_sizes_in_float32() -> None:
    profile = profile_from_config(SMOLLM2, 4)
    assert profile.num_layers == 30
    # q, o: 576 x 576; k, v: 576 x 192; MLP 3 x 576 x 1536; two norms.
    assert profile.layer_bytes == (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) * 4
    assert profile.kv_bytes_per_token == 2 * 3 * 64 * 4
    assert profile.embed_bytes == 49152 * 576 * 4
    assert profile.tied_embeddings
    # One copy of the tied matrix when a single stage holds everything.
    assert profile.extra_bytes(True, True) == (49152 * 576 + 576) * 4
    assert profile.extra_bytes(True, False) + profile.extra_bytes(False, True) > (
        profile.extra_bytes(True, True)
    )
    assert 7.5 < profile.head_layers < 8.5


def test_bfloat16_halves_the_sizes_and_a_folder_reads_its_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"text_config": SMOLLM2}))
    half = profile_from_folder(str(tmp_path), "bfloat16")
    assert half.layer_bytes * 2 == profile_from_config(SMOLLM2, 4).layer_bytes


def test_an_unknown_dtype_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int3'; use one of bfloat16"):
        dtype_bytes("int3")
