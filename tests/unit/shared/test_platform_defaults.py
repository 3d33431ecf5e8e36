"""Engine choices per platform, checked on a CPU-only machine by naming the platform."""

from __future__ import annotations

import pytest

from shared.platform_defaults import choose, select_device, stage_kv_cache_gb


def test_cuda_defaults_to_bfloat16_vllms_compilation_and_profiled_kv_cache() -> None:
    c = choose("cuda")
    assert c.dtype == "bfloat16"
    assert c.enforce_eager is False
    # None: vLLM's own default (torch.compile, piecewise + full CUDA graphs).
    assert (c.compilation, c.compiled) == (None, True)
    assert c.kv_cache_bytes is None
    assert c.gpu_memory_utilization == 0.9


def test_cuda_respects_explicit_choices() -> None:
    c = choose(
        "cuda", dtype="float16", enforce_eager=True, kv_cache_gb=1, gpu_memory_utilization=0.4
    )
    assert (c.dtype, c.enforce_eager, c.compilation) == ("float16", True, None)
    assert c.kv_cache_bytes == 1 << 30
    assert c.gpu_memory_utilization == 0.4


def test_cpu_keeps_float32_eager_and_fixed_kv_cache() -> None:
    c = choose("cpu", kv_cache_gb=stage_kv_cache_gb("cpu", None))
    assert (c.dtype, c.enforce_eager, c.compilation) == ("float32", True, None)
    assert c.kv_cache_bytes == (1 << 30) // 2
    assert stage_kv_cache_gb("cuda", None) is None


def test_cpu_refuses_cuda_graphs_and_bad_utilization() -> None:
    with pytest.raises(ValueError, match="--no-enforce-eager"):
        choose("cpu", enforce_eager=False)
    with pytest.raises(ValueError, match="--gpu-memory-utilization"):
        choose("cuda", gpu_memory_utilization=1.5)


def test_select_device_sets_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    select_device("cuda:1")
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(ValueError, match="--device"):
        select_device("gpu1")


def test_torch_compile_leaves_cuda_compilation_to_vllm() -> None:
    c = choose("cuda", torch_compile=True)
    # None: vLLM's own default (torch.compile, piecewise + full CUDA graphs).
    assert (c.enforce_eager, c.compilation) == (False, None)
    graphs_only = choose("cuda", torch_compile=False).compilation
    assert graphs_only == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    # --enforce-eager alone turns compile off too (the default is not an explicit ask).
    assert choose("cuda", enforce_eager=True).compilation is None
    assert choose("cuda", enforce_eager=True).enforce_eager is True
    with pytest.raises(ValueError, match="--enforce-eager"):
        choose("cuda", enforce_eager=True, torch_compile=True)
    # The CPU backend stays eager whatever the setting (a shared environment may carry it).
    assert choose("cpu", torch_compile=True).compilation is None
    assert choose("cpu", torch_compile=True).enforce_eager is True


def test_cudagraph_mode_replaces_the_graphs_default() -> None:
    compiled = choose("cuda", torch_compile=True, cudagraph_mode="full_decode_only")
    assert compiled.compilation == {"cudagraph_mode": "FULL_DECODE_ONLY"}
    assert compiled.compiled
    assert compiled.describe() == "torch.compile, FULL_DECODE_ONLY CUDA graphs"
    plain = choose("cuda", torch_compile=False, cudagraph_mode="FULL")
    assert plain.compilation == {"mode": 0, "cudagraph_mode": "FULL"}
    assert plain.describe() == "no compile, FULL CUDA graphs"
    assert choose("cuda", torch_compile=True).describe() == (
        "torch.compile, vLLM's default CUDA graphs"
    )
    assert choose("cuda", enforce_eager=True).describe() == "eager"
    with pytest.raises(ValueError, match="not one of vLLM's: NONE, PIECEWISE"):
        choose("cuda", cudagraph_mode="FULLY")
    with pytest.raises(ValueError, match="--torch-compile"):
        choose("cuda", torch_compile=False, cudagraph_mode="FULL_AND_PIECEWISE")
    with pytest.raises(ValueError, match="--enforce-eager"):
        choose("cuda", enforce_eager=True, cudagraph_mode="FULL")
    # The CPU backend has no graphs: the setting is ignored there.
    assert choose("cpu", cudagraph_mode="FULL").compilation is None
