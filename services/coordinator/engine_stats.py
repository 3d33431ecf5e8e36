"""vLLM's own request metrics (`vllm:*`) from EngineCore's step outputs.

EngineCore (log_stats=True) attaches SchedulerStats and per-request events to
its outputs; vLLM's frontend (OutputProcessor) turns those into IterationStats
and hands both to PrometheusStatLogger. The coordinator has no such frontend,
so this module does the same bookkeeping with vLLM's classes: names, labels,
buckets and meanings are vLLM's, so vLLM's Grafana dashboard works unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("layerbus.coordinator")


@dataclass
class _Request:
    stats: Any  # vllm RequestStateStats
    prompt_len: int
    max_tokens: int | None
    is_prefilling: bool = True
    num_cached_tokens: int = 0


class EngineStats:
    """Per-request state + vLLM's PrometheusStatLogger; owned by the engine thread.

    Cost per step: one IterationStats, a few dict lookups per output, one
    record() (a handful of prometheus_client updates); nothing blocks.
    """

    def __init__(self, vllm_config: Any, logger: Any | None = None) -> None:
        if logger is None:
            from vllm.v1.metrics.loggers import PrometheusStatLogger

            logger = PrometheusStatLogger(vllm_config, engine_indexes=[0])
            logger.log_engine_initialized()
        from vllm.v1.metrics.stats import LoRARequestStates

        self.logger = logger
        self.requests: dict[str, _Request] = {}
        self.lora_states = LoRARequestStates(log_stats=False)  # no LoRA adapters here
        self.failed = False

    def add(self, request_id: str, arrival_time: float, prompt_len: int, params: Any) -> None:
        """A request entered EngineCore (arrival_time: wall clock, as vLLM's frontend)."""
        from vllm.v1.metrics.stats import RequestStateStats

        self.requests[request_id] = _Request(
            stats=RequestStateStats(arrival_time=arrival_time),
            prompt_len=prompt_len,
            max_tokens=getattr(params, "max_tokens", None),
        )

    def forget(self, request_id: str) -> None:
        """A request left without a finish output (aborted, failed): not counted."""
        self.requests.pop(request_id, None)

    def record(self, outputs: dict[int, Any] | None) -> None:
        """One EngineCore step's outputs (client index -> EngineCoreOutputs).

        None: a step that produced nothing (the batch queue was still filling).
        """
        if not outputs:
            return
        try:
            self._record(outputs)
        except Exception:  # a metrics bug must never fail requests
            if not self.failed:
                log.exception("vLLM metrics: could not record a step (further errors hidden)")
            self.failed = True

    def _record(self, outputs: dict[int, Any]) -> None:
        from vllm.v1.metrics.stats import IterationStats

        for eco in outputs.values():
            iteration = IterationStats() if eco.outputs else None
            if iteration is not None:
                for out in eco.outputs:
                    self._observe(iteration, out, eco.timestamp)
            if iteration is not None or eco.scheduler_stats is not None:
                self.logger.record(
                    scheduler_stats=eco.scheduler_stats,
                    iteration_stats=iteration,
                    engine_idx=0,
                )

    def _observe(self, iteration: Any, out: Any, timestamp: float) -> None:
        """vLLM OutputProcessor's _update_stats_from_output / _finished for one output."""
        state = self.requests.get(out.request_id)
        if state is None:
            return
        iteration.update_from_output(
            out, timestamp, state.is_prefilling, state.stats, self.lora_states, None
        )
        if state.is_prefilling:
            if out.prefill_stats is not None:
                state.num_cached_tokens = out.prefill_stats.num_cached_tokens
            state.is_prefilling = False
        if out.finish_reason is not None:
            iteration.update_from_finished_request(
                finish_reason=out.finish_reason,
                request_id=out.request_id,
                num_prompt_tokens=state.prompt_len,
                max_tokens_param=state.max_tokens,
                req_stats=state.stats,
                num_cached_tokens=state.num_cached_tokens,
            )
            del self.requests[out.request_id]
