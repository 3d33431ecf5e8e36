"""The stage's place in the chain and what it admits (services/stage/membership.py)."""

from __future__ import annotations

import pytest

from services.stage.membership import (
    REGISTER_RETRY_S,
    Membership,
    announce_due,
    offered_kv_bytes,
)
from services.stage.plan_validation import PlanLimits
from shared import wire

COORDINATOR = "C" * 40
UPSTREAM = "U" * 40
LAST = "L" * 40

LIMITS = PlanLimits(
    num_blocks=8,
    num_kv_groups=1,
    block_size=16,
    vocab_size=100,
    max_model_len=64,
    max_num_seqs=4,
    max_num_batched_tokens=32,
    hidden_size=4,
)


def step(generation: int, step_id: int = 5) -> wire.Step:
    cached = wire.CachedRequestsPlan([], [], [], {}, [], [], [])
    plan = wire.StepPlan(
        new_requests=[],
        cached=cached,
        num_scheduled_tokens={},
        total_num_scheduled_tokens=0,
        finished_req_ids=[],
    )
    return wire.Step(step_id=step_id, plan=plan, tensors=[], generation=generation)


def joined(secure: bool, generation: int = 3) -> Membership:
    chain = Membership(COORDINATOR.encode(), secure)
    chain.generation = generation
    chain.in_chain = True
    chain.limits = LIMITS
    chain.configured = True
    return chain


def test_an_unconfigured_stage_registers_every_few_seconds() -> None:
    t = 1000.0
    assert announce_due(False, t, last_heard=t, last_register=0.0, interval_s=1.0, misses=5)
    recent = t - REGISTER_RETRY_S / 2
    assert not announce_due(False, t, t, last_register=recent, interval_s=1.0, misses=5)


def test_a_configured_stage_registers_again_only_when_the_coordinator_is_silent() -> None:
    t = 1000.0
    assert not announce_due(True, t, last_heard=t - 4.0, last_register=0.0, interval_s=1, misses=5)
    assert announce_due(True, t, last_heard=t - 6.0, last_register=0.0, interval_s=1, misses=5)
    # Silent, but it announced itself a moment ago: not yet again.
    assert not announce_due(True, t, last_heard=t - 60, last_register=t - 1, interval_s=1, misses=5)


def test_the_kv_cache_is_allocated_once_and_later_counts_use_its_first_blocks() -> None:
    chain = Membership(None, secure=False)
    assert chain.blocks_to_allocate(100)
    chain.num_blocks, chain.configured = 100, True
    assert not chain.blocks_to_allocate(100)
    assert not chain.blocks_to_allocate(45)  # a smaller engine: the first 45 blocks
    assert chain.num_blocks == 100  # the cache it holds stays as it was
    with pytest.raises(ValueError, match="holds a KV cache of 100 blocks and cannot take 101"):
        chain.blocks_to_allocate(101)


def test_a_configured_stage_offers_no_more_kv_memory_than_it_holds() -> None:
    assert offered_kv_bytes(available=1000, held=600) == 600
    assert offered_kv_bytes(available=500, held=600) == 500  # its budget, if less
    assert offered_kv_bytes(available=1000, held=0) == 1000  # nothing allocated (no KV layers)


def test_configure_admits_the_upstream_the_ring_and_always_the_coordinator() -> None:
    chain = Membership(COORDINATOR.encode(), secure=True)
    assert chain.upstream == COORDINATOR  # before Configure only the coordinator sends steps
    allowed = chain.admit_keys(UPSTREAM, LAST)
    assert allowed == {COORDINATOR.encode(), UPSTREAM.encode(), LAST.encode()}
    assert (chain.upstream, chain.ring_upstream) == (UPSTREAM, LAST)
    # The first stage's upstream is the coordinator; a middle stage has no ring upstream.
    assert chain.admit_keys("", "") == {COORDINATOR.encode()}
    assert (chain.upstream, chain.ring_upstream) == (COORDINATOR, "")


def test_steps_run_only_from_the_upstream_hop_with_curve() -> None:
    chain = joined(secure=True)
    chain.admit_keys(UPSTREAM, "")
    assert chain.step_refusal(step(3), UPSTREAM) is None
    assert chain.step_refusal(step(3), COORDINATOR) == (
        "unauthorized",
        "a step from a peer that is not the upstream hop",
    )
    assert chain.step_refusal(step(3), None) is not None
    # Without CURVE there is no key to check.
    assert joined(secure=False).step_refusal(step(3), None) is None


def test_steps_of_another_generation_or_for_a_standby_are_stale() -> None:
    chain = joined(secure=False, generation=3)
    reason, detail = chain.step_refusal(step(2, step_id=9), None) or ("", "")
    assert reason == "stale"
    assert detail == "step 9 of generation 2 (this stage: 3, in chain: True)"
    chain.in_chain = False
    assert chain.step_refusal(step(3), None) == (
        "stale",
        "step 5 of generation 3 (this stage: 3, in chain: False)",
    )
    unconfigured = Membership(None, secure=False)
    assert unconfigured.step_refusal(step(0), None) is not None  # no limits yet


def test_ring_tokens_only_at_a_fed_stage_and_from_the_last_stage() -> None:
    chain = joined(secure=True)
    chain.admit_keys(COORDINATOR, LAST)
    tokens = wire.Tokens(step_id=4, generation=3, req_ids=["a"], sampled_token_ids=[[1]])
    assert chain.tokens_refusal(tokens, LAST, fed=True) is None
    assert chain.tokens_refusal(tokens, LAST, fed=False) == (
        "stale",
        "ring tokens of step 4 for a stage not fed",
    )
    assert chain.tokens_refusal(tokens, UPSTREAM, fed=True) == (
        "unauthorized",
        "ring tokens from a peer not the last stage",
    )
    # The coordinator may only name a step that failed on the way.
    assert chain.tokens_refusal(tokens, COORDINATOR, fed=True) is not None
    failed = wire.Tokens(step_id=4, generation=3, failed=True)
    assert chain.tokens_refusal(failed, COORDINATOR, fed=True) is None
    assert chain.tokens_refusal(failed, UPSTREAM, fed=True) is not None
    assert joined(secure=False).tokens_refusal(tokens, None, fed=True) is None


def test_vllms_runner_keeps_the_kv_cache_it_allocated_whatever_later_counts_say() -> None:
    """A stage asked for fewer blocks than it holds never re-initializes its runner: the
    runner's own KVCacheConfig (the allocation) shapes its tensors and block copies, and
    plan_validation refuses block ids at or above the count of the current Configure."""
    import inspect

    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    init = inspect.getsource(GPUModelRunner.initialize_kv_cache)
    assert "self.kv_cache_config = kv_cache_config" in init, (
        "vLLM's runner no longer keeps the KVCacheConfig it allocated "
        "(services/stage/membership.py: a smaller count uses the first blocks)"
    )
    update = inspect.getsource(GPUModelRunner._update_states)
    assert "self.kv_cache_config.num_blocks" in update, (
        "vLLM's runner copies KV blocks against another block count than its allocation"
    )
