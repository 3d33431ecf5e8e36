"""Checks a Step before the stage's model runner sees it (pure logic).

vLLM's kernels trust their inputs: a block id past the KV cache made vLLM's
CPU attention (`reshape_and_cache`) write out of bounds and crash the stage,
and a token id past the vocabulary fails the embedding lookup. Every number
in a plan that indexes memory is checked here against the stage's own
configuration first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared import wire

PLACEHOLDER = wire.PLACEHOLDER

ACTIVATION_NAMES = frozenset({"hidden_states", "residual"})


class PlanRefused(ValueError):
    """A Step the stage will not run; the message says which value is out of range."""


@dataclass(frozen=True)
class PlanLimits:
    """The stage's KV cache and engine shape; built at Configure, read on the main thread."""

    num_blocks: int
    num_kv_groups: int
    block_size: int
    vocab_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    hidden_size: int

    @property
    def max_blocks_per_request(self) -> int:
        return -(-self.max_model_len // self.block_size) + 1


def plan_limits(vllm_config: Any, kv_cache_config: Any) -> PlanLimits:
    """Limits from a stage's VllmConfig and the KVCacheConfig the coordinator sent."""
    model = vllm_config.model_config
    sched = vllm_config.scheduler_config
    groups = kv_cache_config.kv_cache_groups
    return PlanLimits(
        num_blocks=int(kv_cache_config.num_blocks),
        num_kv_groups=len(groups),
        block_size=int(groups[0].kv_cache_spec.block_size),
        vocab_size=int(model.get_vocab_size()),
        max_model_len=int(model.max_model_len),
        max_num_seqs=int(sched.max_num_seqs),
        max_num_batched_tokens=int(sched.max_num_batched_tokens),
        hidden_size=int(model.get_hidden_size()),
    )


def _tokens(ids: Iterable[int], limits: PlanLimits, what: str) -> None:
    for token in ids:
        if not 0 <= token < limits.vocab_size:
            raise PlanRefused(f"{what}: token id {token} outside [0, {limits.vocab_size})")


def _length(items: Sequence[Any], limit: int, what: str) -> None:
    if len(items) > limit:
        raise PlanRefused(f"{what}: {len(items)} entries, at most {limit}")


def _blocks(groups: Sequence[Sequence[int]], limits: PlanLimits, what: str) -> None:
    if len(groups) != limits.num_kv_groups:
        raise PlanRefused(f"{what}: {len(groups)} KV cache groups, expected {limits.num_kv_groups}")
    for group in groups:
        _length(group, limits.max_blocks_per_request, what)
        for block in group:
            if not 0 <= block < limits.num_blocks:
                raise PlanRefused(f"{what}: block id {block} outside [0, {limits.num_blocks})")


def _position(value: int, limits: PlanLimits, what: str) -> None:
    if not 0 <= value <= limits.max_model_len:
        raise PlanRefused(f"{what}: {value} outside [0, {limits.max_model_len}]")


def check_tokens(msg: wire.Tokens, limits: PlanLimits) -> None:
    """Raise PlanRefused unless a token-ring message fits this stage's configuration."""
    _length(msg.req_ids, limits.max_num_seqs, "ring tokens")
    if len(msg.sampled_token_ids) != len(msg.req_ids):
        raise PlanRefused("ring tokens: request and token lists differ in length")
    for rid, ids in zip(msg.req_ids, msg.sampled_token_ids, strict=True):
        _length(ids, limits.max_num_batched_tokens, f"ring tokens of {rid[:64]!r}")
        _tokens(ids, limits, f"ring tokens of {rid[:64]!r}")


def check_plan(plan: wire.StepPlan, limits: PlanLimits) -> None:
    """Raise PlanRefused unless every index in plan fits this stage's configuration."""
    c = plan.cached
    seqs = limits.max_num_seqs
    _length(plan.new_requests, seqs, "new requests")
    _length(c.req_ids, seqs, "cached requests")
    _length(c.resumed_req_ids, len(c.req_ids), "cached.resumed_req_ids")
    parallel = (c.new_block_ids, c.num_computed_tokens, c.num_output_tokens)
    if any(len(items) != len(c.req_ids) for items in parallel):
        raise PlanRefused("cached request lists differ in length")
    # vLLM sends sampled tokens back only with pipeline parallelism (2+ stages).
    if c.new_token_ids and len(c.new_token_ids) != len(c.req_ids):
        raise PlanRefused("cached request lists differ in length")
    _length(list(c.all_token_ids), len(c.req_ids), "cached.all_token_ids")
    if plan.scheduled_spec_decode_tokens:
        raise PlanRefused("speculative decoding tokens are not supported")
    for r in plan.new_requests:
        what = f"request {r.req_id[:64]!r}"
        _length(r.prompt_token_ids, limits.max_model_len, what + " prompt")
        _tokens(r.prompt_token_ids, limits, what + " prompt")
        if r.prefill_token_ids is not None:
            _length(r.prefill_token_ids, limits.max_model_len, what + " prefill")
            _tokens(r.prefill_token_ids, limits, what + " prefill")
        _blocks(r.block_ids, limits, what)
        _position(r.num_computed_tokens, limits, what + " num_computed_tokens")
        _position(r.replay_start, limits, what + " replay_start")
    unknown = [rid for rid in plan.token_sources if rid not in set(c.req_ids)]
    if unknown:
        raise PlanRefused(f"token sources for {len(unknown)} requests the plan does not schedule")
    for i, rid in enumerate(c.req_ids):
        what = f"cached request {rid[:64]!r}"
        if c.new_token_ids:
            row = c.new_token_ids[i]
            _length(row, limits.max_model_len, what)
            # Async scheduling: the last len(sources) tokens are placeholders that the
            # first stage fills from the token ring (services/stage/token_ring.py).
            holes = len(plan.token_sources.get(rid, ()))
            if holes > len(row) or any(t != PLACEHOLDER for t in row[len(row) - holes :]):
                raise PlanRefused(f"{what}: {holes} token sources do not match its placeholders")
            _tokens(row[: len(row) - holes], limits, what)
        _position(c.num_computed_tokens[i], limits, what + " num_computed_tokens")
        blocks = c.new_block_ids[i]
        if blocks is not None:
            _blocks(blocks, limits, what)
    _length(plan.resumed_requests, seqs, "resumed requests")
    for resumed in plan.resumed_requests:
        what = f"resumed request {resumed.req_id[:64]!r}"
        _length(resumed.prompt_token_ids, limits.max_model_len, what + " prompt")
        _tokens(resumed.prompt_token_ids, limits, what + " prompt")
        _length(resumed.output_token_ids, limits.max_model_len, what + " output")
        _tokens(resumed.output_token_ids, limits, what + " output")
    for rid, ids in c.all_token_ids.items():
        _length(ids, limits.max_model_len, f"all_token_ids of {rid[:64]!r}")
        _tokens(ids, limits, f"all_token_ids of {rid[:64]!r}")
    for value in c.num_output_tokens:
        _position(value, limits, "num_output_tokens")
    scheduled = plan.num_scheduled_tokens
    known = {r.req_id for r in plan.new_requests} | set(c.req_ids)
    if not set(scheduled) <= known:
        raise PlanRefused("tokens scheduled for a request the plan does not carry")
    if any(n < 0 for n in scheduled.values()):
        raise PlanRefused("a negative number of scheduled tokens")
    total = plan.total_num_scheduled_tokens
    if total != sum(scheduled.values()) or total > limits.max_num_batched_tokens:
        raise PlanRefused(
            f"total_num_scheduled_tokens {total}: must equal the per-request sum and be at "
            f"most max_num_batched_tokens={limits.max_num_batched_tokens}"
        )
    computed = {r.req_id: r.num_computed_tokens for r in plan.new_requests}
    computed.update(zip(c.req_ids, c.num_computed_tokens, strict=False))
    for rid, n in scheduled.items():
        if computed.get(rid, 0) + n > limits.max_model_len:
            raise PlanRefused(f"request {rid[:64]!r} would pass max_model_len")
    _length(plan.num_common_prefix_blocks, limits.num_kv_groups, "num_common_prefix_blocks")
    for n in plan.num_common_prefix_blocks:
        if not 0 <= n <= limits.max_blocks_per_request:
            raise PlanRefused(f"num_common_prefix_blocks {n} out of range")
    for block in plan.new_block_ids_to_zero or ():
        if not 0 <= block < limits.num_blocks:
            raise PlanRefused(f"block to zero {block} outside [0, {limits.num_blocks})")


def check_tensors(metas: Sequence[wire.TensorMeta], limits: PlanLimits) -> None:
    """Raise PlanRefused unless the activation frames are the ones a stage expects."""
    if len(metas) > len(ACTIVATION_NAMES):
        raise PlanRefused(f"{len(metas)} tensors; a step carries at most {len(ACTIVATION_NAMES)}")
    for meta in metas:
        if meta.name not in ACTIVATION_NAMES:
            raise PlanRefused(f"unexpected tensor {meta.name[:64]!r}")
        if len(meta.shape) != 2 or meta.shape[1] != limits.hidden_size:
            raise PlanRefused(f"tensor {meta.name}: shape {meta.shape[:4]} is not [tokens, hidden]")
        if not 0 <= meta.shape[0] <= limits.max_num_batched_tokens:
            raise PlanRefused(f"tensor {meta.name}: {meta.shape[0]} tokens is out of range")


def max_activation_elements(limits: PlanLimits) -> int:
    """Largest tensor a legitimate step carries, in elements."""
    return limits.max_num_batched_tokens * limits.hidden_size
