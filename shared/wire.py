"""Typed wire messages: every message that crosses a socket is declared here.

A message travels as a multipart ZeroMQ message: frame 0 is a one-byte type
tag, frame 1 the msgpack body of the Struct, frames 2.. optional raw tensor
buffers (see shared/tensor_frames.py). Receivers decode with a typed decoder
chosen by the tag; nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

# A token a step in flight is still sampling (async scheduling): the first stage
# fills it from the token ring before the plan runs (StepPlan.token_sources).
PLACEHOLDER = -1


class WireError(ValueError):
    """A frame that is not a valid layerbus message; the receiver drops it."""


# ---------------------------------------------------------------- gateway side


# The values a request may carry, declared once: the typed decode enforces them (a
# Generate out of range never reaches the coordinator's engine), and the gateway's
# request models take their ranges from here (services/gateway/protocol.py).
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
MAX_SEED = 2**63 - 1
MAX_STOP_TOKEN_IDS = 1024

# A token id: at least 0 here; below the vocabulary size (known to the coordinator) is
# checked there for every field of this type (services/coordinator/validation.py).
TokenId = Annotated[int, Meta(ge=0, extra={"token_id": True})]
NonEmptyText = Annotated[str, Meta(min_length=1)]


class StructuredSpec(msgspec.Struct, omit_defaults=True):
    """One structured-output constraint (vLLM StructuredOutputsParams); exactly one is set.

    json is a JSON Schema as JSON text; the options mirror vLLM's.
    """

    json: str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None


class SamplingSpec(msgspec.Struct, omit_defaults=True):
    """User-facing sampling settings for one sequence (n is fanned out by the gateway).

    Every field is a vLLM SamplingParams field of the same name and meaning (the
    coordinator passes them on by name: services/coordinator/sampling.py), except
    structured (vLLM's structured_outputs). Bounds that depend on the model (token
    ids within the vocabulary, the context length) are checked by the coordinator.
    """

    max_tokens: Annotated[int, Meta(ge=1)]
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Meta(ge=-1)] = 0  # 0 or -1: off
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    seed: Annotated[int, Meta(ge=-MAX_SEED, le=MAX_SEED)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] = 1.0
    logprobs: Annotated[int, Meta(ge=0, le=MAX_LOGPROBS)] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Meta(ge=0)] = 0
    stop_token_ids: Annotated[list[TokenId], Meta(max_length=MAX_STOP_TOKEN_IDS)] = []
    logit_bias: dict[TokenId, float] | None = None  # vLLM clamps each bias to [-100, 100]
    allowed_token_ids: Annotated[list[TokenId], Meta(min_length=1)] | None = None
    bad_words: list[NonEmptyText] = []  # the coordinator tokenizes them as vLLM does
    structured: StructuredSpec | None = None


class Generate(msgspec.Struct):
    """Gateway -> coordinator: start generating for one sequence."""

    request_id: str
    prompt_token_ids: Annotated[list[TokenId], Meta(min_length=1)]
    sampling: SamplingSpec


class Abort(msgspec.Struct):
    """Gateway -> coordinator: stop these requests and free their KV blocks."""

    request_ids: list[str]


class StatusQuery(msgspec.Struct):
    """Gateway -> coordinator: ask for a Status reply carrying the same nonce."""

    nonce: int


class TopLogprob(msgspec.Struct, array_like=True):
    """One candidate token and its log-probability."""

    token_id: int
    logprob: float


class TokenLogprob(msgspec.Struct, array_like=True):
    """Log-probability of a sampled token, its rank and the top candidates."""

    token_id: int
    logprob: float
    rank: int
    top: list[TopLogprob]


class RequestOutput(msgspec.Struct, omit_defaults=True):
    """New tokens of one request since the last output.

    finish_reason is "stop", "length" or "abort" once the request is done;
    error is set (and finish_reason "error") when the pipeline failed it.
    """

    request_id: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    error: str | None = None
    invalid: bool = False  # the request itself is at fault (HTTP 400), not the service


class Outputs(msgspec.Struct):
    """Coordinator -> gateway: a batch of request outputs from one engine step."""

    items: list[RequestOutput]


class Accepted(msgspec.Struct):
    """Coordinator -> gateway: these Generate messages reached this incarnation.

    Sent by the coordinator's I/O thread on receipt, before it answers any later
    message from that gateway, so a gateway that gets a Status reply knows which of
    the requests it sent before that query the answering incarnation holds.
    """

    request_ids: list[str]
    incarnation: str


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
    max_micro_batches: int = 0  # cap of the automatic raise (= micro_batches when fixed)
    round_trip_ms: float = 0.0  # smoothed send -> result time of one step
    metrics: str = ""  # the coordinator's exporter URL ("" = metrics off)
    dtype: str = ""


# ------------------------------------------------------------------ stage side


class Register(msgspec.Struct):
    """Stage -> coordinator: a stage has loaded its layers and offers this capacity.

    kv_cache_specs is the stage's vLLM KV cache spec, encoded by shared.vllm_bridge.kv_codec.
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


class TensorMeta(msgspec.Struct, array_like=True):
    """Name, dtype and shape of one raw tensor frame that follows the header."""

    name: str
    dtype: str
    shape: list[int]


class NewRequestPlan(msgspec.Struct, omit_defaults=True):
    """A request a stage has not seen before (vLLM NewRequestData)."""

    req_id: str
    prompt_token_ids: list[int]
    sampling_params: bytes  # msgspec-encoded vllm SamplingParams (typed decode)
    block_ids: list[list[int]]
    num_computed_tokens: int
    prefill_token_ids: list[int] | None = None
    replay_start: int = 0


class ResumedRequestPlan(msgspec.Struct):
    """A request resumed after preemption or a chain rebuild, for a stage that never saw it."""

    req_id: str
    prompt_token_ids: list[int]
    sampling_params: bytes  # msgspec-encoded vllm SamplingParams (typed decode)
    output_token_ids: list[int]


class CachedRequestsPlan(msgspec.Struct):
    """Requests the stages already hold (vLLM CachedRequestData)."""

    req_ids: list[str]
    resumed_req_ids: list[str]
    new_token_ids: list[list[int]]
    all_token_ids: dict[str, list[int]]
    new_block_ids: list[list[list[int]] | None]
    num_computed_tokens: list[int]
    num_output_tokens: list[int]


class StepPlan(msgspec.Struct, omit_defaults=True):
    """One engine step as scheduled by the coordinator (vLLM SchedulerOutput)."""

    new_requests: list[NewRequestPlan]
    cached: CachedRequestsPlan
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    finished_req_ids: list[str]
    preempted_req_ids: list[str] | None = None
    num_common_prefix_blocks: list[int] = []
    new_block_ids_to_zero: list[int] | None = None
    scheduled_spec_decode_tokens: dict[str, list[int]] = {}
    resumed_requests: list[ResumedRequestPlan] = []
    grammar: GrammarMask | None = None
    # Async scheduling: the coordinator plans a step before the tokens it feeds are
    # sampled. A cached request's new_token_ids then end in placeholders (-1), filled
    # by the first stage from the Tokens of these steps (in order), one token each.
    token_sources: dict[str, list[int]] = {}


class GrammarMask(msgspec.Struct):
    """vLLM GrammarOutput for one step: one int32 bitmask row per structured request.

    bitmask holds rows x words little-endian int32 values; only the last stage uses it.
    """

    req_ids: list[str]
    bitmask: bytes
    rows: int
    words: int


class Step(msgspec.Struct):
    """Header of an activation message: the plan plus the tensor frames after it."""

    step_id: int
    plan: StepPlan
    tensors: list[TensorMeta]
    generation: int = 0


class Tokens(msgspec.Struct, omit_defaults=True):
    """Last stage -> first stage (the token ring): what one step sampled, per request.

    The first stage fills the placeholders of later plans with these tokens, so a
    token waits for the links between stages only, never for the coordinator. The
    coordinator sends failed=True for a step that will never sample (it failed on
    the way), so the first stage does not wait for it.
    """

    step_id: int
    generation: int
    req_ids: list[str] = []
    sampled_token_ids: list[list[int]] = []
    failed: bool = False


class SampledLogprobs(msgspec.Struct, array_like=True):
    """vLLM LogprobsLists as plain lists: one row per generated token."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    ranks: list[int]
    cu_num_generated_tokens: list[int] | None


class StepResult(msgspec.Struct, omit_defaults=True):
    """Last stage -> coordinator: what one step sampled (vLLM ModelRunnerOutput)."""

    step_id: int
    req_ids: list[str]
    sampled_token_ids: list[list[int]]
    logprobs: SampledLogprobs | None = None
    error: str = ""
    generation: int = 0
