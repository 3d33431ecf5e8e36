"""Config-only model folders: the named layouts, what the folder holds, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark import model_shapes
from benchmark.model_shapes import SHAPES, VOCAB_SIZE, config_for, shape_named, write_shape

# Published parameter counts, with Llama-3's own 128,256-token vocabulary.
LLAMA3_8B_PARAMETERS = 8_030_261_248
LLAMA3_70B_PARAMETERS = 70_553_706_496
LLAMA3_VOCAB = 128_256


def fake_source(folder: Path, vocab: int = VOCAB_SIZE) -> Path:
    """A prepared-model folder: config.json, tokenizer files and a weight file."""
    folder.mkdir()
    template = {
        "_name_or_path": "somewhere",
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rms_norm_eps": 1e-5,
        "hidden_size": 576,
        "num_hidden_layers": 30,
    }
    (folder / "config.json").write_text(json.dumps(template))
    (folder / "tokenizer.json").write_text('{"model": "tok"}')
    (folder / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_llama3_layouts_match_the_published_models() -> None:
    for name, published in (
        ("llama3-8b", LLAMA3_8B_PARAMETERS),
        ("llama3-70b", LLAMA3_70B_PARAMETERS),
    ):
        shape = SHAPES[name]
        # Only the vocabulary differs from Meta's models (input embeddings and lm_head).
        extra_vocab = 2 * (LLAMA3_VOCAB - VOCAB_SIZE) * shape.hidden
        assert shape.parameters() + extra_vocab == published, name
    eight = SHAPES["llama3-8b"]
    assert (eight.layers, eight.hidden, eight.intermediate) == (32, 4096, 14336)
    assert (eight.heads, eight.kv_heads, eight.head_dim) == (32, 8, 128)
    seventy = SHAPES["llama3-70b"]
    assert (seventy.layers, seventy.hidden, seventy.intermediate) == (80, 8192, 28672)
    assert (seventy.heads, seventy.kv_heads, seventy.head_dim) == (64, 8, 128)


def test_tiny_shape_fits_cpu_attention_and_splits_in_two() -> None:
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    tiny = SHAPES["tiny"]
    assert tiny.head_dim in CPUAttentionBackend.get_supported_head_sizes()
    assert tiny.heads * tiny.head_dim == tiny.hidden
    assert tiny.layers % 2 == 0 and tiny.parameters() < 20_000_000


def test_folder_has_config_and_tokenizer_but_no_weights(tmp_path: Path) -> None:
    source = fake_source(tmp_path / "src")
    target = tmp_path / "shape"
    target.mkdir()
    (target / "stale.safetensors").write_bytes(b"old")
    write_shape("llama3-8b", target, source)
    assert sorted(p.name for p in target.iterdir()) == [
        "chat_template.jinja",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((target / "config.json").read_text())
    assert config["num_hidden_layers"] == 32 and config["hidden_size"] == 4096
    assert config["vocab_size"] == VOCAB_SIZE and config["eos_token_id"] == 2
    assert "_name_or_path" not in config


def test_transformers_reads_the_layout(tmp_path: Path) -> None:
    from transformers import AutoConfig

    folder = write_shape("llama3-70b", tmp_path / "shape", fake_source(tmp_path / "src"))
    hf = AutoConfig.from_pretrained(folder)
    assert (hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size) == (80, 8192, 28672)
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (64, 8, 128)
    assert hf.rope_parameters["rope_theta"] == 500000.0
    assert hf.tie_word_embeddings is False


def test_wrong_vocabulary_and_unknown_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="49152"):
        write_shape("tiny", tmp_path / "out", fake_source(tmp_path / "src", vocab=32000))
    with pytest.raises(ValueError, match="llama3-8b"):
        shape_named("llama3-8")


def test_config_keeps_template_token_ids() -> None:
    config = config_for(SHAPES["tiny"], {"bos_token_id": 7, "quantization_config": {}})
    assert config["bos_token_id"] == 7 and "quantization_config" not in config
    assert config["torch_dtype"] == "float32"


def test_cli_writes_the_named_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = fake_source(tmp_path / "src")
    argv = ["tiny", str(tmp_path / "tiny"), "--tokenizer-from", str(source)]
    assert model_shapes.main(argv) == 0
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["num_hidden_layers"] == 4
    assert "tiny" in capsys.readouterr().out
