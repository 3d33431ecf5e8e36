"""Stage <-> coordinator control plane: registration, configuration, liveness, leaving."""

from __future__ import annotations

import msgspec

from shared.wire.placement import Offer


class Register(msgspec.Struct):
    """Stage -> coordinator: a stage has loaded its layers and offers this capacity.

    kv_cache_specs is the stage's vLLM KV cache spec, encoded by shared.vllm_bridge.kv_codec.
    A placed stage also sends the Offer it measured before it was given its range: a
    coordinator restarted since then has never seen that offer, and needs it to move the
    stage in a re-plan (it must name this stage and process, or the coordinator ignores it).
    """

    name: str
    layer_start: int
    layer_end: int
    num_layers: int
    data_address: str
    kv_cache_specs: bytes
    available_kv_bytes: int
    kv_cache_layouts: list[str]
    engine_fingerprint: str
    pid: int
    layers_loaded: list[int] = []
    other_parameters: list[str] = []
    metrics: str = ""  # URL Prometheus scrapes ("" = metrics off)
    dtype: str = ""  # what the stage's vLLM config runs (e.g. bfloat16)
    max_model_len: int = 0
    placed: bool = False  # the coordinator chose the range (no --layers): it may re-plan it
    offer: Offer | None = None  # a placed stage's measured capacity (None: pinned, or older)


class Configure(msgspec.Struct):
    """Coordinator -> stage: allocate this KV cache and forward activations to next_address.

    next_address is empty for the last stage, which returns results to the coordinator.
    """

    kv_cache_config: bytes
    kv_cache_layout: str
    next_address: str
    stage_index: int
    num_stages: int
    generation: int = 0
    live_request_ids: list[str] = []  # the stage drops every other request it holds
    # CURVE (z85 public keys, empty when off): who may send this stage steps,
    # and the server key of next_address.
    upstream_key: str = ""
    next_key: str = ""
    # The token ring (chains of two or more stages): the last stage sends each step's
    # sampled tokens to ring_address (the first stage's activation socket, server key
    # ring_next_key); the first stage admits Tokens from ring_upstream_key.
    ring_address: str = ""
    ring_next_key: str = ""
    ring_upstream_key: str = ""


class Configured(msgspec.Struct):
    """Stage -> coordinator: the KV cache is allocated (or error says why not)."""

    name: str
    num_blocks: int
    error: str = ""


class Heartbeat(msgspec.Struct):
    """Either direction: the sender is alive (stages add their work counters)."""

    name: str
    seq: int
    pid: int = 0
    steps: int = 0
    busy_s: float = 0.0
    recent_step_ms: float = 0.0
    num_requests: int = 0
    generation: int = 0
    # Seconds the stage's main thread waited for a CPU so far (services/stage/cpu_wait.py).
    cpu_wait_s: float = 0.0


class Reset(msgspec.Struct):
    """Coordinator -> stage: leave the chain, drop every request, wait as a standby."""

    generation: int


class Leave(msgspec.Struct):
    """Stage -> coordinator: this stage is shutting down; hand its work over now."""

    name: str
    pid: int
    reason: str


class Shutdown(msgspec.Struct):
    """Coordinator -> stage: exit cleanly."""

    reason: str
