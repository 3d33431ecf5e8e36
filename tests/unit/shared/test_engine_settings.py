"""Engine settings: the load format, the fingerprint stages are checked by, the VllmConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from services.coordinator.registry import Registry, RegistryError
from shared import wire
from shared.engine_settings import (
    EngineSettings,
    build_vllm_config,
    check_load_format,
    supported_load_formats,
)


def register(fingerprint: str) -> wire.Register:
    return wire.Register(
        name="s",
        layer_start=0,
        layer_end=2,
        num_layers=2,
        data_address="tcp://127.0.0.1:7000",
        kv_cache_specs=b"",
        available_kv_bytes=1,
        kv_cache_layouts=[],
        engine_fingerprint=fingerprint,
        pid=1,
    )


def test_load_format_defaults_to_auto_and_reads_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EngineSettings().load_format == "auto"
    monkeypatch.setenv("LAYERBUS_LOAD_FORMAT", "Dummy")
    assert EngineSettings().load_format == "dummy"  # vLLM lowercases it as well


def test_random_and_real_weights_never_share_a_fingerprint() -> None:
    real = EngineSettings(load_format="auto").fingerprint()
    assert EngineSettings(load_format="dummy").fingerprint() != real
    # Reading the same checkpoint another way computes the same model.
    assert EngineSettings(load_format="safetensors").fingerprint() == real
    registry = Registry(2, real)
    with pytest.raises(RegistryError, match="weights=random"):
        registry.add(b"s", register(EngineSettings(load_format="dummy").fingerprint()), now=0)


def test_every_vllm_load_format_is_accepted_and_others_are_refused_by_name() -> None:
    # Names the vLLM internal relied on: its loader table, which plugins extend.
    from vllm.model_executor.model_loader import _LOAD_FORMAT_TO_MODEL_LOADER, LoadFormats

    assert supported_load_formats() == frozenset(_LOAD_FORMAT_TO_MODEL_LOADER)
    assert set(get_args(LoadFormats)) <= supported_load_formats()
    for name in get_args(LoadFormats):
        check_load_format(name)
    with pytest.raises(ValueError, match=r"--load-format \(LAYERBUS_LOAD_FORMAT\) 'weightless'"):
        check_load_format("weightless")


def test_loader_extra_config_is_a_json_object() -> None:
    assert EngineSettings().loader_extra_config() == {}
    extra = EngineSettings(model_loader_extra_config='{"num_readers": 4}')
    assert extra.loader_extra_config() == {"num_readers": 4}
    for bad in ("{num_readers: 4}", "[1]"):
        # Refused when the settings are read, so `layerbus serve` stops before any child starts.
        with pytest.raises(ValidationError, match="--model-loader-extra-config"):
            EngineSettings(model_loader_extra_config=bad)


def tiny_config_folder(folder: Path) -> Path:
    """A Llama config.json and nothing else: no weights, no tokenizer."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_load_format_reaches_vllms_load_config(tmp_path: Path) -> None:
    engine = EngineSettings(
        model=str(tiny_config_folder(tmp_path)),
        max_model_len=256,
        load_format="dummy",
        model_loader_extra_config="{}",
    )
    config = build_vllm_config(engine, pipeline_size=1)
    assert config.load_config.load_format == "dummy"
    assert config.load_config.model_loader_extra_config == {}
    with pytest.raises(ValueError, match="LAYERBUS_LOAD_FORMAT"):
        build_vllm_config(engine.model_copy(update={"load_format": "nope"}), pipeline_size=1)


def test_cudagraph_mode_is_checked_when_the_settings_are_read() -> None:
    assert EngineSettings(cudagraph_mode="full_decode_only").cudagraph_mode == "FULL_DECODE_ONLY"
    assert EngineSettings().cudagraph_mode == ""
    with pytest.raises(ValidationError, match="not one of vLLM's: NONE, PIECEWISE"):
        EngineSettings(cudagraph_mode="fully")
