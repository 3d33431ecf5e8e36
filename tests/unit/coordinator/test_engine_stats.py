"""services/coordinator/engine_stats.py: EngineCore outputs -> vLLM's IterationStats."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, FinishReason
from vllm.v1.metrics.stats import PrefillStats

from services.coordinator.engine_stats import EngineStats


class FakeLogger:
    """Keeps what EngineStats hands vLLM's PrometheusStatLogger."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, Any]] = []

    def record(self, scheduler_stats: Any, iteration_stats: Any, engine_idx: int = 0) -> None:
        self.records.append((scheduler_stats, iteration_stats))


def output(rid: str, tokens: list[int], finish: FinishReason | None = None) -> EngineCoreOutput:
    prefill = PrefillStats()
    prefill.set(num_prompt_tokens=5, num_local_cached_tokens=0, num_external_cached_tokens=0)
    return EngineCoreOutput(
        request_id=rid, new_token_ids=tokens, finish_reason=finish, prefill_stats=prefill
    )


def stats_with(rid: str = "r1") -> tuple[EngineStats, FakeLogger]:
    logger = FakeLogger()
    stats = EngineStats(vllm_config=None, logger=logger)
    stats.add(rid, time.time(), 5, SimpleNamespace(max_tokens=3))
    return stats, logger


def test_first_output_gives_ttft_and_prompt_tokens_later_ones_itl() -> None:
    stats, logger = stats_with()
    stats.record({0: EngineCoreOutputs(outputs=[output("r1", [7])], timestamp=10.0)})
    stats.record({0: EngineCoreOutputs(outputs=[output("r1", [8])], timestamp=10.5)})
    first, second = (it for _, it in logger.records)
    assert len(first.time_to_first_tokens_iter) == 1
    assert first.num_prompt_tokens == 5 and first.num_generation_tokens == 1
    assert second.time_to_first_tokens_iter == []
    assert second.inter_token_latencies_iter == [0.5]
    assert second.num_prompt_tokens == 0


def test_a_finished_request_is_counted_once_then_forgotten() -> None:
    stats, logger = stats_with()
    stats.record({0: EngineCoreOutputs(outputs=[output("r1", [7])], timestamp=1.0)})
    done = output("r1", [8], FinishReason.LENGTH)
    stats.record({0: EngineCoreOutputs(outputs=[done], timestamp=2.0)})
    finished = logger.records[-1][1].finished_requests
    assert [(f.finish_reason, f.num_generation_tokens, f.num_prompt_tokens) for f in finished] == [
        (FinishReason.LENGTH, 2, 5)
    ]
    assert stats.requests == {}


def test_scheduler_stats_alone_are_recorded_outputs_of_unknown_requests_ignored() -> None:
    stats, logger = stats_with()
    sched = object()
    stats.record({0: EngineCoreOutputs(outputs=[output("other", [1])], scheduler_stats=sched)})
    ((recorded_sched, iteration),) = logger.records
    assert recorded_sched is sched
    assert iteration.num_generation_tokens == 0
    stats.record({0: EngineCoreOutputs(scheduler_stats=sched)})
    assert logger.records[-1] == (sched, None)


def test_an_aborted_request_is_forgotten_without_a_finish() -> None:
    stats, logger = stats_with()
    stats.forget("r1")
    stats.record({0: EngineCoreOutputs(outputs=[output("r1", [1], FinishReason.ABORT)])})
    assert logger.records[-1][1].finished_requests == []


def test_a_logger_error_never_escapes() -> None:
    stats, logger = stats_with()
    logger.record = None  # type: ignore[assignment, method-assign]
    stats.record({0: EngineCoreOutputs(outputs=[output("r1", [1])])})
    assert stats.failed


def test_a_step_without_outputs_records_nothing_and_is_no_error() -> None:
    stats, logger = stats_with()
    stats.record(None)
    stats.record({})
    assert logger.records == [] and not stats.failed
