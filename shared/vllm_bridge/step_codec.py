"""Translate vLLM's SchedulerOutput and ModelRunnerOutput to and from wire messages.

Only what a text-only decoder pipeline uses crosses the wire; a plan that
needs anything else (multimodal inputs, LoRA, KV connectors, speculative
decoding) is refused with an error naming the feature. Structured-output
bitmasks travel in StepPlan.grammar (shared/vllm_bridge/grammar_codec.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from vllm.sampling_params import SamplingParams
from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput
from vllm.v1.outputs import LogprobsLists, ModelRunnerOutput

from shared import wire

_SP_ENCODER = msgspec.msgpack.Encoder()
PLACEHOLDER = wire.PLACEHOLDER
_SP_DECODER = msgspec.msgpack.Decoder(SamplingParams)


class UnsupportedPlan(ValueError):
    """The scheduler produced a step that layerbus cannot carry to the stages."""


def _check_supported(so: SchedulerOutput) -> None:
    unsupported = {
        "scheduled_encoder_inputs (multimodal)": bool(so.scheduled_encoder_inputs),
        "kv_connector_metadata": so.kv_connector_metadata is not None,
        "ec_connector_metadata": so.ec_connector_metadata is not None,
        "kv_cache_block_copies": bool(so.kv_cache_block_copies),
    }
    reqs = so.scheduled_new_reqs
    unsupported["multimodal request"] = any(r.mm_features for r in reqs)
    unsupported["LoRA request"] = any(r.lora_request is not None for r in reqs)
    unsupported["prompt embeddings"] = any(r.prompt_embeds is not None for r in reqs)
    bad = [name for name, used in unsupported.items() if used]
    if bad:
        raise UnsupportedPlan(f"layerbus pipelines do not support: {', '.join(bad)}")


def cached_token_ids(
    so: SchedulerOutput, requests: Mapping[str, Any] | None = None
) -> list[list[int]]:
    """The tokens each cached request feeds this step; PLACEHOLDER (-1) where not sampled yet.

    vLLM's scheduler fills `new_token_ids` itself only for synchronous pipeline
    parallelism. With async scheduling the coordinator takes them from the
    request (positions num_computed_tokens .. + scheduled); a position whose token
    a step in flight still samples becomes a placeholder that the first stage
    fills from the token ring (services/stage/token_ring.py).
    """
    c = so.scheduled_cached_reqs
    if requests is None:
        # Synchronous pipeline parallelism: vLLM filled them (with async scheduling
        # it leaves each row empty, so the coordinator always passes its requests).
        return [list(t) for t in c.new_token_ids]
    rows = []
    for i, rid in enumerate(c.req_ids):
        start = c.num_computed_tokens[i]
        count = so.num_scheduled_tokens[rid] - len(so.scheduled_spec_decode_tokens.get(rid, ()))
        known = requests[rid].all_token_ids[start : start + count]
        rows.append([*known, *[PLACEHOLDER] * (count - len(known))])
    return rows


def plan_from_scheduler_output(
    so: SchedulerOutput, requests: Mapping[str, Any] | None = None, histories: bool = False
) -> wire.StepPlan:
    """Coordinator side: SchedulerOutput -> StepPlan.

    `requests` (the scheduler's Request objects) lets resumed requests carry
    what a stage that never saw them needs to take them up. `histories` keeps
    vLLM's all_token_ids (whole token lists of requests re-entering the batch),
    which only vLLM's async model runner reads: a single GPU stage.
    """
    _check_supported(so)
    new = [
        wire.NewRequestPlan(
            req_id=r.req_id,
            prompt_token_ids=list(r.prompt_token_ids or []),
            sampling_params=_SP_ENCODER.encode(r.sampling_params),
            block_ids=[list(b) for b in r.block_ids],
            num_computed_tokens=r.num_computed_tokens,
            prefill_token_ids=r.prefill_token_ids,
            replay_start=r.replay_start,
        )
        for r in so.scheduled_new_reqs
    ]
    c = so.scheduled_cached_reqs
    resumed = []
    for rid in sorted(c.resumed_req_ids):
        request = None if requests is None else requests.get(rid)
        if request is not None:
            resumed.append(
                wire.ResumedRequestPlan(
                    req_id=rid,
                    prompt_token_ids=list(request.prompt_token_ids or []),
                    sampling_params=_SP_ENCODER.encode(request.sampling_params),
                    output_token_ids=list(request.output_token_ids),
                )
            )
    cached = wire.CachedRequestsPlan(
        req_ids=list(c.req_ids),
        resumed_req_ids=sorted(c.resumed_req_ids),
        new_token_ids=cached_token_ids(so, requests),
        # Only vLLM's async model runner reads whole histories on the stages; the
        # stages' runners are synchronous (the coordinator plans ahead, the token
        # ring fills in), so the plan carries what changed and never the history.
        all_token_ids={k: list(v) for k, v in c.all_token_ids.items()} if histories else {},
        new_block_ids=[None if b is None else [list(g) for g in b] for b in c.new_block_ids],
        num_computed_tokens=list(c.num_computed_tokens),
        num_output_tokens=list(c.num_output_tokens),
    )
    return wire.StepPlan(
        new_requests=new,
        cached=cached,
        num_scheduled_tokens=dict(so.num_scheduled_tokens),
        total_num_scheduled_tokens=so.total_num_scheduled_tokens,
        finished_req_ids=sorted(so.finished_req_ids),
        preempted_req_ids=(None if so.preempted_req_ids is None else sorted(so.preempted_req_ids)),
        num_common_prefix_blocks=list(so.num_common_prefix_blocks),
        new_block_ids_to_zero=so.new_block_ids_to_zero,
        scheduled_spec_decode_tokens={
            k: list(v) for k, v in so.scheduled_spec_decode_tokens.items()
        },
        resumed_requests=resumed,
    )


def scheduler_output_from_plan(plan: wire.StepPlan) -> SchedulerOutput:
    """Stage side: StepPlan -> SchedulerOutput for the local vLLM model runner."""
    new_reqs = []
    for r in plan.new_requests:
        try:
            params = _SP_DECODER.decode(r.sampling_params)
        except (msgspec.MsgspecError, ValueError, TypeError) as err:
            raise wire.WireError(f"bad sampling params for {r.req_id}: {err}") from None
        new_reqs.append(
            NewRequestData(
                req_id=r.req_id,
                prompt_token_ids=r.prompt_token_ids,
                mm_features=[],
                sampling_params=params,
                pooling_params=None,
                block_ids=tuple(r.block_ids),
                num_computed_tokens=r.num_computed_tokens,
                lora_request=None,
                prefill_token_ids=r.prefill_token_ids,
                replay_start=r.replay_start,
            )
        )
    c = plan.cached
    cached = CachedRequestData(
        req_ids=c.req_ids,
        resumed_req_ids=set(c.resumed_req_ids),
        new_token_ids=c.new_token_ids,
        all_token_ids=c.all_token_ids,
        new_block_ids=[None if b is None else tuple(b) for b in c.new_block_ids],
        num_computed_tokens=c.num_computed_tokens,
        num_output_tokens=c.num_output_tokens,
    )
    return SchedulerOutput(
        scheduled_new_reqs=new_reqs,
        scheduled_cached_reqs=cached,
        num_scheduled_tokens=plan.num_scheduled_tokens,
        total_num_scheduled_tokens=plan.total_num_scheduled_tokens,
        scheduled_spec_decode_tokens=plan.scheduled_spec_decode_tokens,
        scheduled_encoder_inputs={},
        finished_req_ids=set(plan.finished_req_ids),
        free_encoder_mm_hashes=[],
        preempted_req_ids=(None if plan.preempted_req_ids is None else set(plan.preempted_req_ids)),
        num_common_prefix_blocks=plan.num_common_prefix_blocks,
        new_block_ids_to_zero=plan.new_block_ids_to_zero,
    )


Resumed = tuple[str, list[int], SamplingParams, list[int]]


def resumed_from_plan(plan: wire.StepPlan) -> list[Resumed]:
    """Stage side: (req_id, prompt, sampling params, output tokens) of resumed requests."""
    out = []
    for r in plan.resumed_requests:
        try:
            params = _SP_DECODER.decode(r.sampling_params)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise wire.WireError(f"bad sampling params for {r.req_id}: {err}") from None
        out.append((r.req_id, r.prompt_token_ids, params, r.output_token_ids))
    return out


def result_from_runner_output(step_id: int, out: ModelRunnerOutput) -> wire.StepResult:
    """Last stage: ModelRunnerOutput -> StepResult."""
    logprobs = None
    if out.logprobs is not None:
        lp = out.logprobs
        logprobs = wire.SampledLogprobs(
            token_ids=np.asarray(lp.logprob_token_ids).tolist(),
            logprobs=np.asarray(lp.logprobs, dtype=np.float64).tolist(),
            ranks=np.asarray(lp.sampled_token_ranks).tolist(),
            cu_num_generated_tokens=lp.cu_num_generated_tokens,
        )
    return wire.StepResult(
        step_id=step_id,
        req_ids=list(out.req_ids),
        sampled_token_ids=[list(map(int, t)) for t in out.sampled_token_ids],
        logprobs=logprobs,
    )


def runner_output_from_result(result: wire.StepResult) -> ModelRunnerOutput:
    """Coordinator: StepResult -> ModelRunnerOutput for Scheduler.update_from_output."""
    logprobs = None
    if result.logprobs is not None:
        lp = result.logprobs
        logprobs = LogprobsLists(
            logprob_token_ids=np.asarray(lp.token_ids, dtype=np.int32),
            logprobs=np.asarray(lp.logprobs, dtype=np.float32),
            sampled_token_ranks=np.asarray(lp.ranks, dtype=np.int32),
            cu_num_generated_tokens=lp.cu_num_generated_tokens,
        )
    return ModelRunnerOutput(
        req_ids=result.req_ids,
        req_id_to_index={rid: i for i, rid in enumerate(result.req_ids)},
        sampled_token_ids=result.sampled_token_ids,
        logprobs=logprobs,
    )
