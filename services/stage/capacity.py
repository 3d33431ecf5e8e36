"""What a stage offers placement: its device, the memory it may use, its measured speed.

The memory budget is pure arithmetic over what the device reports (unit-tested on a
CPU for both platforms); `probe_capacity` reads the device and times the speed probe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from shared.platform_defaults import DEFAULT_GPU_MEMORY_UTILIZATION, Platform

GIB = 1 << 30
# The speed probe's sizes (services/stage/speed_probe.py). Decode: this many sequences,
# one new token each, attending to this many past tokens. Prefill: one chunk of this
# many tokens (the engine's default max_num_batched_tokens).
DECODE_BATCH = 16
DECODE_CONTEXT = 256
PREFILL_TOKENS = 512
# A CPU stage shares its host: by default it offers this share of the available memory.
CPU_MEMORY_SHARE = 0.9


class CapacityError(ValueError):
    """A stage with no memory to offer, with the setting that changes it."""


def prefill_weight(prompt_ratio: float) -> float:
    """Prefill-sized forwards per decode-sized one, at the probe's sizes.

    Each generated token comes with `prompt_ratio` prompt tokens (1.0: prompts as
    long as outputs); a decode step generates DECODE_BATCH tokens, so it brings
    DECODE_BATCH * prompt_ratio prompt tokens, PREFILL_TOKENS to a chunk.
    """
    if prompt_ratio < 0:
        raise ValueError(f"the prompt ratio must be >= 0, got {prompt_ratio}")
    return prompt_ratio * DECODE_BATCH / PREFILL_TOKENS


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes a stage may fill with weights and KV cache, and how that figure came about."""

    bytes: int
    why: str


def memory_budget(
    platform: Platform,
    total: int,
    free: int,
    cap_gb: float | None = None,
    gpu_memory_utilization: float | None = None,
) -> MemoryBudget:
    """The memory a stage offers for weights and KV cache.

    CUDA: vLLM's rule, the --gpu-memory-utilization share of the GPU, which vLLM
    (0.32, v1/worker/utils.py request_memory) refuses to start with unless that much
    is free. CPU: 90 % of the host's available memory (start several stages on one
    host each with --memory-gb). --memory-gb caps either.
    """
    if platform == "cuda":
        util = gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        budget = int(util * total)
        if free < budget:
            raise CapacityError(
                f"only {free / GIB:.1f} GiB of the GPU's {total / GIB:.1f} GiB are free, less "
                f"than --gpu-memory-utilization {util:g} asks ({budget / GIB:.1f} GiB), and "
                f"vLLM would refuse to start; lower it to {int(free / total * 100) / 100:g} "
                "or free the GPU"
            )
        why = f"{util:.0%} of the GPU's {total / GIB:.1f} GiB (--gpu-memory-utilization)"
    else:
        budget = int(CPU_MEMORY_SHARE * free)
        why = f"{CPU_MEMORY_SHARE:.0%} of the host's {free / GIB:.1f} GiB available"
    if cap_gb is not None:
        if cap_gb <= 0:
            raise CapacityError(f"--memory-gb must be > 0, got {cap_gb}")
        cap = int(cap_gb * GIB)
        if cap <= budget:
            budget, why = cap, f"--memory-gb {cap_gb:g}"
        else:
            why += f"; less than --memory-gb {cap_gb:g}"
    if budget <= 0:
        raise CapacityError(f"this stage has no memory to offer ({why}); free some memory")
    return MemoryBudget(budget, why)


def available_host_memory(meminfo: str) -> tuple[int, int]:
    """(total, available) bytes from the text of /proc/meminfo."""
    fields: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in fields:
        raise CapacityError("cannot read the host's memory from /proc/meminfo")
    return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))


@dataclass(frozen=True)
class StageOffer:
    """A stage's capacity as `layerbus plan` and, later, the coordinator take it (immutable)."""

    device: str
    memory: MemoryBudget
    decode_s: float  # one decoder layer at decode size
    prefill_s: float  # one decoder layer at prefill size
    head_s: float | None = None  # final norm and LM head at decode size, when timed
    link_s: float | None = None  # round trip to the coordinator, when measured

    def plan_item(self, name: str) -> dict[str, Any]:
        """The stage object `layerbus plan --stages` reads."""
        item = {
            "name": name,
            "device": self.device,
            "memory_gb": round(self.memory.bytes / GIB, 3),
            "decode_ms": round(self.decode_s * 1000, 4),
            "prefill_ms": round(self.prefill_s * 1000, 4),
        }
        if self.head_s is not None:
            item["head_ms"] = round(self.head_s * 1000, 4)
        if self.link_s is not None:
            item["link_ms"] = round(self.link_s * 1000, 4)
        return item


def device_memory(platform: Platform) -> tuple[str, int, int]:
    """(device description, total bytes, free bytes) of this process's device."""
    if platform == "cuda":
        import torch

        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return f"cuda:{index} {torch.cuda.get_device_name(index)}", total, free
    with open("/proc/meminfo") as f:
        total, free = available_host_memory(f.read())
    return f"cpu ({os.cpu_count()} cores)", total, free


def probe_capacity(
    config: dict[str, Any],
    dtype: str,
    cap_gb: float | None = None,
    gpu_memory_utilization: float | None = None,
) -> StageOffer:
    """Read this device's memory and time one decoder layer of the model's shape on it."""
    import torch

    from services.stage.speed_probe import LayerShape, probe_speed
    from shared.platform_defaults import detect_platform

    platform = detect_platform()
    device, total, free = device_memory(platform)
    budget = memory_budget(platform, total, free, cap_gb, gpu_memory_utilization)
    speed = probe_speed(
        LayerShape.from_config(config),
        getattr(torch, dtype),
        torch.device("cuda" if platform == "cuda" else "cpu"),
    )
    return StageOffer(device, budget, speed.decode_s, speed.prefill_s, speed.head_s)
