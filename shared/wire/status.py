"""Gateway <-> coordinator: StatusQuery and the Status reply (the gateway's /status)."""

from __future__ import annotations

import msgspec


class StatusQuery(msgspec.Struct):
    """Gateway -> coordinator: ask for a Status reply carrying the same nonce."""

    nonce: int


class StageStatus(msgspec.Struct):
    """One stage as the coordinator sees it."""

    name: str
    address: str
    layer_start: int
    layer_end: int
    state: str
    last_heartbeat_age_s: float
    layers_loaded: list[int] = []
    other_parameters: list[str] = []
    role: str = "standby"  # "active" (in the current chain) or "standby"
    pid: int = 0
    steps: int = 0
    busy_s: float = 0.0
    recent_step_ms: float = 0.0
    num_requests: int = 0
    metrics: str = ""  # URL Prometheus scrapes ("" = metrics off)
    dtype: str = ""
    max_model_len: int = 0
    # Placement (stages started without --layers): what the stage offered and the plan.
    placed: bool = False
    device: str = ""
    memory_gb: float = 0.0  # what it may fill with weights and KV cache
    layer_decode_ms: float = 0.0  # one decoder layer's forward at decode size, measured
    predicted_step_ms: float = 0.0  # the plan's step time for its range (with its link)


class Status(msgspec.Struct):
    """Coordinator -> gateway: readiness, model and pipeline state."""

    nonce: int
    ready: bool
    model: str
    max_model_len: int
    num_layers: int
    stages: list[StageStatus]
    num_total_blocks: int = 0
    num_free_blocks: int = 0
    num_running: int = 0
    num_waiting: int = 0
    max_batches_in_flight: int = 0
    steps: int = 0
    coordinator_parameters: int = 0
    detail: str = ""
    incarnation: str = ""
    generation: int = 0
    micro_batches: int = 0
    micro_batch_sizes: list[int] = []
    batches_in_flight: int = 0
    empty_steps: int = 0
    recoveries: int = 0
    last_recovery_s: float = 0.0  # from the chain breaking to serving again, last time
    max_micro_batches: int = 0  # cap of the automatic raise (= micro_batches when fixed)
    round_trip_ms: float = 0.0  # smoothed send -> result time of one step
    metrics: str = ""  # the coordinator's exporter URL ("" = metrics off)
    dtype: str = ""
