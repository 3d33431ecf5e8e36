"""Settings of one stage process (flags or LAYERBUS_* environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StageSettings(BaseSettings):
    """Where a stage listens, whom it serves and which layers it holds."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_STAGE_", extra="ignore")

    layers: str = Field(..., description="layer range START:END (END exclusive), e.g. 0:15")
    coordinator: str = Field(
        "tcp://127.0.0.1:5555", description="coordinator ROUTER address to register with"
    )
    bind: str = Field(
        "tcp://127.0.0.1:0", description="activation socket bind address (port 0 = any)"
    )
    advertise: str = Field(
        "", description="activation address other hosts use (default: the bound one)"
    )
    name: str = Field("", description="stable stage name (default: stage-START-END)")
    threads: int | None = Field(None, description="torch CPU threads (default: torch's)")
    kv_cache_gb: float = Field(0.5, description="KV cache memory on this stage, GiB")
