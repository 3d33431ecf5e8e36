"""Settings of one stage process (flags or LAYERBUS_* environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StageSettings(BaseSettings):
    """Where a stage listens, whom it serves and which layers it holds."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_STAGE_", extra="ignore")

    layers: str = Field(
        "",
        description="layer range START:END (END exclusive), e.g. 0:15 (default: the "
        "coordinator places this stage from its measured capacity)",
    )
    coordinator: str = Field(
        "tcp://127.0.0.1:5555", description="coordinator ROUTER address to register with"
    )
    bind: str = Field(
        "tcp://127.0.0.1:0", description="activation socket bind address (port 0 = any)"
    )
    advertise: str = Field(
        "", description="activation address other hosts use (default: the bound one)"
    )
    name: str = Field(
        "",
        description="stable stage name (default: stage-START-END with --layers, else "
        "HOST-PID)",
    )
    memory_gb: float | None = Field(
        None,
        description="memory placement may fill with this stage's weights and KV cache, GiB "
        "(default: 90% of the host's available memory on CPU, --gpu-memory-utilization "
        "of the GPU)",
    )
    threads: int | None = Field(None, description="torch CPU threads (default: torch's)")
    kv_cache_gb: float | None = Field(
        None,
        description="KV cache on this stage, GiB (default: 0.5 on CPU; on CUDA sized by vLLM "
        "from free GPU memory under --gpu-memory-utilization)",
    )
    gpu_memory_utilization: float | None = Field(
        None, description="share of the GPU's memory this stage may use (vLLM's; default 0.9)"
    )
    async_runner: bool = Field(
        True,
        description="a stage holding the whole model on a GPU runs vLLM's async model runner "
        "(sampling overlaps the next step, as `vllm serve` does)",
    )
    device: str = Field("", description="GPU for this stage, cuda:N (default: the first)")
