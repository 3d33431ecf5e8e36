"""Settings for every service: command-line flags and LAYERBUS_* environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TransportSettings(BaseSettings):
    """Socket options shared by all services."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_", extra="ignore")

    linger_ms: int = Field(1000, description="ZMQ LINGER on close, milliseconds")
    hwm: int = Field(10_000, description="ZMQ send/receive high-water mark, messages")
    max_message_bytes: int = Field(
        4 << 20,
        description="largest accepted control message (gateway <-> coordinator, registrations); "
        "activation sockets are sized from the engine shape",
    )
    heartbeat_interval_s: float = Field(1.0, description="seconds between heartbeats")
    heartbeat_misses: int = Field(5, description="missed heartbeats before a peer is dead")
    secret_key: str = Field(
        "", description="this service's CURVE .key_secret file; empty = no encryption"
    )
    coordinator_key: str = Field(
        "", description="the coordinator's public .key file (stages and gateways)"
    )
    insecure: bool = Field(
        False, description="allow a plaintext socket on a non-loopback address (logs a warning)"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        description="coordinator/stage Prometheus port (default: coordinator 9100, stage 9101; "
        "a taken port moves to the next free one of the 15 after it; 0 = off)",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="address the metrics port listens on (0.0.0.0 for Prometheus on "
        "another host or container; the metrics carry no prompt text)",
    )
    metrics_advertise: str = Field(
        "",
        description="HOST or HOST:PORT Prometheus scrapes this service's metrics at, as /status "
        "lists it (behind NAT or a container's published port); default: --metrics-host, or "
        "when that is a wildcard the host of the bound/advertised address, else the host name",
    )

    @field_validator("metrics_advertise")
    @classmethod
    def _check_metrics_advertise(cls, value: str) -> str:
        from shared.metrics_endpoint import parse_advertise

        if value:
            parse_advertise(value)  # AdvertiseError is a ValueError: pydantic reports it
        return value
