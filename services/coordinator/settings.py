"""Settings of the coordinator process (flags or LAYERBUS_* environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CoordinatorSettings(BaseSettings):
    """Where the coordinator listens and how long it waits for its stages."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_", extra="ignore")

    bind: str = Field("tcp://127.0.0.1:5555", description="ROUTER address for gateways and stages")
    configure_timeout_s: float = Field(
        300.0, description="seconds a stage may take to allocate its KV cache"
    )
    step_timeout_s: float = Field(
        300.0, description="a step with no result for this long fails its requests"
    )
    served_model_name: str = Field("", description="model name in /status (default: folder)")
    micro_batches: int = Field(
        0,
        ge=0,
        description="micro-batches in flight through the chain; 0 = one per stage to start, "
        "raised while serving when a step's round trip outlasts the stages' work "
        "(see docs/structure.md); a number fixes M",
    )
    max_micro_batches: int = Field(
        0,
        ge=0,
        description="cap for the automatic raise (0 = 4 per stage; one stage: no raise)",
    )
    async_scheduling: bool = Field(
        True,
        description="plan each micro-batch's next step before its tokens are back (vLLM's "
        "async scheduling); the last stage sends sampled tokens straight to the first",
    )
    recovery_timeout_s: float = Field(
        60.0,
        gt=0,
        description="after a chain stage dies, how long to wait for a standby or a restarted "
        "stage before the interrupted requests fail",
    )
    placement_settle_s: float = Field(
        3.0,
        ge=0,
        description="stages started without a layer range: plan the split once no new stage "
        "has offered for this long",
    )
    rebalance_min_gain: float = Field(
        0.2,
        ge=0,
        description="placed stages: move them onto a better split (a standby joining) only "
        "when the predicted step time drops by at least this share",
    )
    rebalance_interval_s: float = Field(
        600.0,
        ge=0,
        description="placed stages: no rebalance sooner than this after the chain last "
        "changed (start, rebuild or rebalance)",
    )
    authorized_keys: str = Field(
        "",
        description="folder of public keys it admits: gateway*.key are gateways, stage*.key "
        "are stages (needs --secret-key)",
    )
