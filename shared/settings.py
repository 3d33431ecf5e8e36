"""Settings for every service: command-line flags and LAYERBUS_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TransportSettings(BaseSettings):
    """Socket options shared by all services."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_", extra="ignore")

    linger_ms: int = Field(1000, description="ZMQ LINGER on close, milliseconds")
    hwm: int = Field(10_000, description="ZMQ send/receive high-water mark, messages")
    max_message_bytes: int = Field(
        1 << 30, description="largest accepted ZMQ message; bigger ones are dropped"
    )
    heartbeat_interval_s: float = Field(1.0, description="seconds between heartbeats")
    heartbeat_misses: int = Field(5, description="missed heartbeats before a peer is dead")
