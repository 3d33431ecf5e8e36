"""services/coordinator/engine_core.py: steps, requests, failures over a fake EngineCore.

The last tests check by name the vLLM EngineCore internals the module relies on.
"""

from __future__ import annotations

import inspect
from collections import deque
from types import SimpleNamespace
from typing import Any

import msgspec
from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, FinishReason
from vllm.v1.engine.core import EngineCore

from services.coordinator.engine_core import (
    PipelineEngineCore,
    admission_error,
    eos_token_id,
    size_batch_queue,
)
from services.coordinator.pipeline import ChainBroken, PipelineFailed
from tests.unit.coordinator.engine_fakes import (
    FakeLink,
    FakeStage,
    FakeVllmCore,
    Sent,
    generate,
    publisher_with,
)

GW1, GW2 = b"gw-1", b"gw-2"


def engine_with(
    *owners: tuple[str, bytes], depth: int = 2, micro: int = 1, cap: int = 4
) -> tuple[PipelineEngineCore, FakeVllmCore, FakeLink, Sent]:
    sent = Sent()
    core = FakeVllmCore(micro, cap)
    link = FakeLink([FakeStage("s0", (0, 2)), FakeStage("s1", (2, 4))])
    engine = PipelineEngineCore(core, link, publisher_with(sent, *owners), depth, micro, cap, 64)  # type: ignore[arg-type]
    for rid, _ in owners:
        core.scheduler.requests[rid] = SimpleNamespace(request_id=rid)
    return engine, core, link, sent


def step_output(rid: str, tokens: list[int], finish: str | None = None) -> dict[int, Any]:
    reason = None if finish is None else FinishReason[finish.upper()]
    out = EngineCoreOutput(request_id=rid, new_token_ids=tokens, finish_reason=reason)
    return {0: EngineCoreOutputs(outputs=[out])}


def test_the_batch_queue_holds_what_m_may_grow_to_and_admits_what_m_allows() -> None:
    core = FakeVllmCore()
    size_batch_queue(core, depth=2, micro_batches=2, max_micro_batches=8)
    assert core.batch_queue is not None and core.batch_queue.maxlen == 16
    assert core.batch_queue_size == 4
    assert core.step_fn == core.step_with_batch_queue  # type: ignore[attr-defined]


def test_one_step_at_a_time_runs_without_a_batch_queue() -> None:
    core = FakeVllmCore()
    size_batch_queue(core, depth=1, micro_batches=1, max_micro_batches=1)
    assert core.batch_queue is None and core.step_fn == core.step  # type: ignore[attr-defined]


def test_growing_m_widens_the_queue_and_the_scheduler_rotation() -> None:
    engine, core, _, _ = engine_with(depth=2, micro=2, cap=6)
    engine.grow(5)
    assert core.batch_queue_size == 10 and core.scheduler.micro.count == 5
    assert core.batch_queue is not None and core.batch_queue.maxlen == 12


def test_the_executor_reads_the_schedulers_requests() -> None:
    engine, core, _, _ = engine_with()
    assert core.model_executor.requests is core.scheduler.requests


def test_a_step_publishes_to_each_owner_and_forgets_finished_requests() -> None:
    engine, core, _, sent = engine_with(("a", GW1), ("b", GW2))
    core.results.append(step_output("a", [5], finish="length") | {1: step_output("b", [6])[0]})
    assert engine.step()
    assert [(o.request_id, o.token_ids) for o in sent.outputs(GW1)] == [("a", [5])]
    assert [(o.request_id, o.token_ids) for o in sent.outputs(GW2)] == [("b", [6])]
    assert engine.publisher.running() == ["b"] and core.post_steps == [True]


def test_a_failed_step_fails_every_request_and_releases_the_failed_steps() -> None:
    engine, core, link, sent = engine_with(("a", GW1), ("b", GW1))
    core.batch_queue = deque([1, 2])
    core.scheduler.micro.started(0)
    core.results.append(PipelineFailed("stage-1 could not run the step"))
    assert not engine.step()
    errors = [(o.request_id, o.finish_reason, o.error) for o in sent.outputs(GW1)]
    reason = "PipelineFailed: stage-1 could not run the step"
    assert errors == [("a", "error", reason), ("b", "error", reason)]
    assert core.aborted == ["a", "b"] and not core.batch_queue
    assert core.scheduler.micro.in_flight[0] == 0
    assert link.released == 1 and engine.publisher.running() == []


def test_a_broken_chain_leaves_requests_running_for_recovery() -> None:
    engine, core, link, sent = engine_with(("a", GW1))
    core.results.append(ChainBroken("s1 died"))
    assert not engine.step()
    assert sent.messages == [] and core.aborted == [] and link.released == 0
    assert engine.publisher.running() == ["a"]


def test_admission_refuses_duplicates_empty_and_too_long_prompts_then_a_failure() -> None:
    assert "already running" in str(admission_error(generate("a", [1]), True, 64, None))
    empty = wire_generate_without_prompt()
    assert admission_error(empty, False, 64, None) == "the prompt is empty"
    assert "maximum context length is 8" in str(
        admission_error(generate("a", [1] * 6), False, 8, None)
    )
    assert admission_error(generate("a", [1]), False, 8, "pipeline unavailable") == (
        "pipeline unavailable"
    )
    assert admission_error(generate("a", [1]), False, 8, None) is None


def wire_generate_without_prompt() -> Any:
    msg = generate("a", [1])
    msg.prompt_token_ids = []
    return msg


def test_a_taken_request_reaches_vllm_and_belongs_to_its_gateway() -> None:
    engine, core, _, sent = engine_with()
    engine.add(GW1, generate("a", [3, 4, 5]))
    assert [r.request_id for r in core.added] == ["a"]
    assert core.added[0].prompt_token_ids == [3, 4, 5]
    assert core.added[0].sampling_params.max_tokens == 4
    assert engine.publisher.owner_of("a") == GW1 and sent.messages == []


def test_a_refused_request_is_answered_and_marked_invalid_unless_the_pipeline_failed() -> None:
    engine, core, link, sent = engine_with(("a", GW1))
    engine.add(GW2, generate("a", [1]))
    core.refuse_with = RuntimeError("vLLM says no")
    engine.add(GW2, generate("b", [1]))
    core.refuse_with = None
    link.failure = "pipeline unavailable: no stage for layers 2:4"
    engine.add(GW2, generate("c", [1]))
    refused = [(o.request_id, o.error, o.invalid) for o in sent.outputs(GW2)]
    assert refused == [
        ("a", "request id 'a' is already running", True),
        ("b", "RuntimeError: vLLM says no", True),
        ("c", link.failure, False),
    ]
    assert engine.publisher.owner_of("a") == GW1 and core.added == []


def test_only_the_submitting_gateway_aborts_a_request() -> None:
    engine, core, _, _ = engine_with(("a", GW1), ("b", GW2))
    assert not engine.abort(GW2, ["a", "unknown"])
    assert engine.abort(GW1, ["a", "b"])
    assert core.aborted == ["a"] and engine.publisher.running() == ["b"]


def test_a_rebuild_drops_queued_steps_and_restarts_the_scheduler() -> None:
    engine, core, _, sent = engine_with(("a", GW1))
    core.batch_queue = deque([1])
    engine.restart_all()
    assert not core.batch_queue and core.scheduler.restarts == 1
    assert core.model_executor.sources.cleared == 1
    assert engine.publisher.running() == ["a"] and sent.messages == []


def test_no_chain_in_time_aborts_and_fails_every_request() -> None:
    engine, core, _, sent = engine_with(("a", GW1), ("b", GW2))
    engine.abort_all("pipeline unavailable")
    assert core.aborted == ["a", "b"]
    assert [o.error for o in sent.outputs(GW1) + sent.outputs(GW2)] == ["pipeline unavailable"] * 2


def test_counts_read_the_kv_pool_without_the_null_block() -> None:
    engine, _, _, _ = engine_with()
    counts = engine.counts()
    assert counts["num_total_blocks"] == 10 and counts["num_free_blocks"] == 7


def test_eos_comes_from_the_text_config_first_and_a_list_gives_its_first_id() -> None:
    both = SimpleNamespace(
        hf_text_config=SimpleNamespace(eos_token_id=[2, 7]),
        hf_config=SimpleNamespace(eos_token_id=9),
    )
    assert eos_token_id(both) == 2
    only_hf = SimpleNamespace(
        hf_text_config=SimpleNamespace(), hf_config=SimpleNamespace(eos_token_id=9)
    )
    assert eos_token_id(only_hf) == 9


# ------------------------------------------------------------ vLLM internals, by name


def test_engine_core_sets_up_its_batch_queue_in_init() -> None:
    text = inspect.getsource(EngineCore.__init__)
    for name in ("self.batch_queue_size =", "self.batch_queue:", "self.step_fn ="):
        assert name in text, (
            f"vLLM's EngineCore.__init__ no longer sets {name.split()[0]}; "
            "services/coordinator/engine_core.py:size_batch_queue replaces it after start-up"
        )


def test_step_with_batch_queue_reads_the_queue_size_on_every_call() -> None:
    text = inspect.getsource(EngineCore.step_with_batch_queue)
    assert "batch_queue = self.batch_queue" in text and "< self.batch_queue_size" in text, (
        "vLLM's EngineCore.step_with_batch_queue no longer reads self.batch_queue and "
        "self.batch_queue_size on each call; raising M (PipelineEngineCore.grow) relies on it"
    )
    assert "return None, model_executed" in text, (
        "vLLM's step_with_batch_queue no longer returns (None, executed) while the queue fills"
    )


def test_engine_core_request_api_is_the_one_the_engine_core_calls() -> None:
    assert list(inspect.signature(EngineCore.preprocess_add_request).parameters) == [
        "self",
        "request",
    ], "vLLM's EngineCore.preprocess_add_request(request) changed its parameters"
    assert list(inspect.signature(EngineCore.add_request).parameters)[:3] == [
        "self",
        "request",
        "request_wave",
    ], "vLLM's EngineCore.add_request(request, request_wave) changed its parameters"
    for name in ("abort_requests", "post_step", "step"):
        assert callable(getattr(EngineCore, name, None)), f"vLLM's EngineCore lost {name}()"


def test_engine_core_request_needs_only_the_fields_the_engine_core_fills() -> None:
    filled = {
        "request_id",
        "prompt_token_ids",
        "mm_features",
        "sampling_params",
        "pooling_params",
        "arrival_time",
        "lora_request",
        "cache_salt",
        "data_parallel_rank",
    }
    fields = msgspec.structs.fields(EngineCoreRequest)
    required = {f.name for f in fields if f.required}
    assert required <= filled, (
        f"vLLM's EngineCoreRequest now requires {sorted(required - filled)}; "
        "fill them in services/coordinator/engine_core.py:PipelineEngineCore._add"
    )
    assert filled <= {f.name for f in fields}, "vLLM's EngineCoreRequest dropped a field we fill"


def test_scheduler_and_block_pool_expose_what_status_reads() -> None:
    text = inspect.getsource(Scheduler.__init__)
    for name in ("self.requests:", "self.running:", "self.waiting", "self.kv_cache_manager"):
        assert name in text, f"vLLM's Scheduler lost {name.split(':')[0]} (engine_core.counts)"
    assert callable(getattr(Scheduler, "has_requests", None)), "Scheduler.has_requests is gone"
    assert "self.num_gpu_blocks" in inspect.getsource(BlockPool.__init__), (
        "vLLM's BlockPool lost num_gpu_blocks (/status num_total_blocks)"
    )
    assert callable(getattr(BlockPool, "get_num_free_blocks", None)), (
        "vLLM's BlockPool lost get_num_free_blocks (/status num_free_blocks)"
    )
