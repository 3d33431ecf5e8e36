"""The vLLM internals async scheduling and the token ring rely on, each checked by name.

A vLLM upgrade that changes one of them fails here, naming it, instead of as a
token mismatch in an end-to-end test.
"""

from __future__ import annotations

import inspect

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.executor.abstract import Executor
from vllm.v1.request import Request
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

from services.coordinator.executor import PipelineExecutor
from services.coordinator.scheduler import MicroBatchScheduler


def source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_async_scheduler_counts_tokens_in_flight_as_output_placeholders() -> None:
    text = source(AsyncScheduler._update_after_schedule)
    assert "num_output_placeholders +=" in text, (
        "vLLM's AsyncScheduler no longer counts tokens in flight in "
        "Request.num_output_placeholders (services/coordinator/token_sources.py relies on it)"
    )
    assert "is_prefill_chunk" in text, "a partial prefill chunk no longer skips its placeholder"


def test_request_exposes_what_the_executor_reads() -> None:
    init = source(Request.__init__)
    for name in ("num_output_placeholders", "is_prefill_chunk", "self.all_token_ids ="):
        assert name in init, f"vLLM's Request lost {name} (services/coordinator/executor.py)"


def test_async_pipeline_scheduling_leaves_token_rows_to_the_caller() -> None:
    text = source(Scheduler._make_cached_request_data)
    assert "not self.scheduler_config.async_scheduling" in text, (
        "vLLM's scheduler changed when it fills CachedRequestData.new_token_ids; "
        "shared/vllm_bridge/step_codec.py:cached_token_ids fills them for async scheduling"
    )


def test_cached_request_data_is_built_before_computed_tokens_advance() -> None:
    text = source(Scheduler.schedule)
    assert text.index("_make_cached_request_data(") < text.index("_update_after_schedule("), (
        "num_computed_tokens in CachedRequestData must be the position before this step "
        "(shared/vllm_bridge/step_codec.py:cached_token_ids reads the step's tokens from there)"
    )


def test_executors_declare_async_scheduling_support() -> None:
    assert "supports_async_scheduling" in vars(Executor)
    assert PipelineExecutor.supports_async_scheduling() is True
    assert PipelineExecutor.bind(None, 1.0, False).supports_async_scheduling() is False  # type: ignore[arg-type]


def test_a_non_last_rank_takes_sampled_tokens_from_new_token_ids() -> None:
    text = source(GPUModelRunner._update_states)
    assert "req_data.new_token_ids[i]" in text and "is_last_rank" in text, (
        "vLLM's V1 runner no longer reads sampled tokens from new_token_ids on non-last "
        "pipeline ranks; the token ring (services/stage/token_ring.py) fills them there"
    )


def test_the_async_micro_batch_scheduler_is_vllms_async_scheduler() -> None:
    bound = MicroBatchScheduler.bind(2, 4, async_scheduling=True)
    assert issubclass(bound, AsyncScheduler)
    assert not issubclass(MicroBatchScheduler.bind(2, 4), AsyncScheduler)
