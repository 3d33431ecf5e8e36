"""Where a stage's vLLM keeps its torch.compile cache: one folder per layer range.

vLLM keys its compile cache on its config, VLLM_PP_LAYER_PARTITION and the pipeline
rank of the process. A stage is a one-process engine (rank 0) that loads [start, end)
through the partition, so two stages on one host whose partitions read alike (0:16 and
16:32 are both "16,16") would share a key, and the second would load the first one's
compiled graph. Each range therefore gets its own VLLM_CACHE_ROOT under the user's, and
vLLM's own keys still tell engine settings and code versions apart inside it. A stage
that restarts with its range finds its graphs again (the rejoin is fast); a stage
reloaded for a new range compiles that range once. Every GPU stage uses it, compiled
or not (the startup plan and Triton's cache matter to both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# The user's vLLM cache root, kept across a placed stage's reload (which execs the
# process again with the environment this module changed).
BASE_ENV = "LAYERBUS_VLLM_CACHE_BASE"


def user_cache_root(env: Mapping[str, str]) -> str:
    """vLLM's cache root as vLLM itself resolves it (VLLM_CACHE_ROOT, else XDG, else ~)."""
    if env.get(BASE_ENV):
        return env[BASE_ENV]
    if env.get("VLLM_CACHE_ROOT"):
        return os.path.expanduser(env["VLLM_CACHE_ROOT"])
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "vllm")


def range_cache_env(env: Mapping[str, str], start: int, end: int, layers: int) -> dict[str, str]:
    """The environment entries that give layers [start, end) of `layers` its own cache.

    Besides the compile cache root, two caches that make a restart on a GPU fast:
    - TRITON_CACHE_DIR, one folder for all ranges (Triton keys kernels by their source).
      Without it vLLM points Triton into the compile cache's hash folder only when it
      compiles, and a restart that loads the compiled graphs instead JIT-compiles the
      ~90 kernels of vLLM's warm-up again into ~/.triton (31 s on the H200, run F).
    - vLLM's startup plan (VLLM_ENABLE_STARTUP_PLAN): the profiled KV cache size kept
      under the range's root, so a restart skips memory profiling and the CUDA-graph
      memory estimate (vLLM profiles again if the GPU has less free memory than then).
    A value the user set for either is kept.
    """
    base = user_cache_root(env)
    root = os.path.join(base, "layerbus", f"layers-{start}-{end}-of-{layers}")
    return {
        BASE_ENV: base,
        "VLLM_CACHE_ROOT": root,
        "TRITON_CACHE_DIR": env.get("TRITON_CACHE_DIR") or os.path.join(base, "layerbus", "triton"),
        "VLLM_ENABLE_STARTUP_PLAN": env.get("VLLM_ENABLE_STARTUP_PLAN") or "1",
    }
