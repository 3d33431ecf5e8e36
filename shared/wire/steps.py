"""The activation path: Step plans to the stages, Tokens around the ring, StepResults back."""

from __future__ import annotations

import msgspec

# A token a step in flight is still sampling (async scheduling): the first stage
# fills it from the token ring before the plan runs (StepPlan.token_sources).
PLACEHOLDER = -1


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
