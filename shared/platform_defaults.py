"""Engine choices that depend on where a process runs: CUDA GPU or CPU.

Pure logic: the platform is passed in (detect_platform() reads it from torch),
so the CUDA choices are unit-tested on a CPU-only machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Platform = Literal["cuda", "cpu"]

# vLLM's own default: the share of the GPU's memory one engine (here: one stage) may use.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# A CPU stage's KV cache when none is named (vLLM's CPU worker sizes nothing itself).
DEFAULT_CPU_KV_CACHE_GB = 0.5
# Whether a CUDA stage compiles its layers (torch.compile, as `vllm serve` does) when
# neither --torch-compile nor --no-torch-compile is given. On: one stage on the H200
# gave 0.99 / 1.03 / 1.02 x `vllm serve` at c = 1 / 32 / 128 compiled against 0.96 /
# 0.99 / 1.00 without; with the compile cache, Triton's cache and vLLM's startup plan
# kept per layer range (services/stage/compile_cache.py) a killed stage answered again
# 39 s after its restart against 32 s uncompiled (81 s before those caches). A stage
# re-placed onto new layers compiles them once, about 30 s more (docs/gpu.md, run H).
CUDA_TORCH_COMPILE = True

# vLLM's CUDAGraphMode names (vllm/config/compilation.py), for --cudagraph-mode.
CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
# Without torch.compile a stage captures full graphs of decode batches only: piecewise
# graphs need compiled pieces.
UNCOMPILED_CUDAGRAPH_MODE = "FULL_DECODE_ONLY"


def cudagraph_mode_name(value: str) -> str:
    """--cudagraph-mode as vLLM spells it ("" = the default), or ValueError naming the choices."""
    mode = value.strip().upper()
    if mode and mode not in CUDAGRAPH_MODES:
        raise ValueError(
            f"--cudagraph-mode {value!r} is not one of vLLM's: " + ", ".join(CUDAGRAPH_MODES)
        )
    return mode


@dataclass(frozen=True)
class PlatformChoice:
    """Resolved engine choices for one platform (immutable; any thread)."""

    platform: Platform
    dtype: str
    enforce_eager: bool
    # vLLM compilation_config: None = vLLM's default for the platform.
    compilation: dict[str, object] | None
    # Fixed KV cache bytes, or None to size it from free GPU memory.
    kv_cache_bytes: int | None
    gpu_memory_utilization: float
    # torch.compile on (CUDA only).
    compiled: bool = False

    def describe(self) -> str:
        """How the layers run, for a stage's start-up log."""
        if self.enforce_eager:
            return "eager"
        graphs = (self.compilation or {}).get("cudagraph_mode", "vLLM's default")
        return f"{'torch.compile' if self.compiled else 'no compile'}, {graphs} CUDA graphs"


def detect_platform() -> Platform:
    """The platform this process runs on, as torch sees it."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def choose(
    platform: Platform,
    *,
    dtype: str = "",
    enforce_eager: bool | None = None,
    kv_cache_gb: float | None = None,
    gpu_memory_utilization: float | None = None,
    torch_compile: bool | None = None,
    cudagraph_mode: str = "",
) -> PlatformChoice:
    """Fill unset choices with the platform's defaults.

    CUDA: bfloat16 (the bundled model's config says float32, which rules out
    FlashAttention), vLLM's own default compilation (torch.compile, piecewise + full
    CUDA graphs, as `vllm serve` runs; see CUDA_TORCH_COMPILE), KV cache sized by vLLM
    from the free GPU memory under gpu_memory_utilization. torch_compile=False: CUDA
    graphs of full decode batches only, no Inductor. cudagraph_mode: one of vLLM's
    CUDAGraphMode names instead of those defaults. enforce_eager: neither.
    CPU: float32, eager (vLLM's CPU backend has no graphs), a fixed KV cache of
    kv_cache_gb (see stage_kv_cache_gb); torch_compile and cudagraph_mode are ignored
    there.
    """
    mode = cudagraph_mode_name(cudagraph_mode)
    util = gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    if not 0 < util <= 1:
        raise ValueError(f"--gpu-memory-utilization must be in (0, 1], got {util}")
    if platform == "cuda":
        eager = bool(enforce_eager)
        if eager and torch_compile:
            raise ValueError(
                "--torch-compile runs CUDA graphs: drop --enforce-eager, or drop --torch-compile"
            )
        if eager and mode not in ("", "NONE"):
            raise ValueError(
                f"--cudagraph-mode {mode} needs CUDA graphs: drop --enforce-eager, or drop "
                "--cudagraph-mode"
            )
        compile_ = not eager and (CUDA_TORCH_COMPILE if torch_compile is None else torch_compile)
        if mode and not compile_ and "PIECEWISE" in mode:
            raise ValueError(
                f"--cudagraph-mode {mode} needs torch.compile's pieces: add --torch-compile, "
                f"or use {UNCOMPILED_CUDAGRAPH_MODE} or FULL"
            )
        compilation: dict[str, object] | None
        if eager:
            compilation = None
        elif compile_:
            compilation = {"cudagraph_mode": mode} if mode else None
        else:
            compilation = {"mode": 0, "cudagraph_mode": mode or UNCOMPILED_CUDAGRAPH_MODE}
        return PlatformChoice(
            platform=platform,
            dtype=dtype or "bfloat16",
            enforce_eager=eager,
            compilation=compilation,
            kv_cache_bytes=int(kv_cache_gb * (1 << 30)) if kv_cache_gb else None,
            gpu_memory_utilization=util,
            compiled=compile_,
        )
    if enforce_eager is False:
        raise ValueError("CUDA graphs need a GPU: drop --no-enforce-eager on a CPU host")
    return PlatformChoice(
        platform=platform,
        dtype=dtype or "float32",
        enforce_eager=True,
        compilation=None,
        kv_cache_bytes=int(kv_cache_gb * (1 << 30)) if kv_cache_gb else None,
        # vLLM's CPU worker reserves this share of *host* memory: keep it small.
        gpu_memory_utilization=gpu_memory_utilization or 0.05,
    )


def stage_kv_cache_gb(platform: Platform, kv_cache_gb: float | None) -> float | None:
    """A stage's KV cache size: as named, else a fixed default on CPU, else sized by vLLM."""
    if kv_cache_gb is None and platform == "cpu":
        return DEFAULT_CPU_KV_CACHE_GB
    return kv_cache_gb


def select_device(device: str) -> None:
    """Pin this process to one GPU ("cuda:N"), before CUDA is first touched."""
    import os

    if not device:
        return
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index.isdigit():
        raise ValueError(f"--device must be cuda:N (N a GPU index), got {device!r}")
    os.environ["CUDA_VISIBLE_DEVICES"] = index
