"""A vLLM Executor whose workers are remote stages reached over ZeroMQ.

EngineCore (vLLM's scheduler + KV cache manager) calls these methods from the
coordinator's engine thread. The coordinator process loads no weights: KV
specs and capacity come from the stages' registrations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from vllm.v1.executor.abstract import Executor
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

from services.coordinator.pipeline import PipelineFailed, PipelineLink
from services.coordinator.token_sources import Row, TokenSources
from shared import wire
from shared.step_phases import timed
from shared.vllm_bridge.grammar_codec import mask_from_grammar_output
from shared.vllm_bridge.kv_codec import decode_kv
from shared.vllm_bridge.step_codec import (
    PLACEHOLDER,
    plan_from_scheduler_output,
    runner_output_from_result,
)


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def _mapped(source: Future[Any], convert: Callable[[Any], Any]) -> Future[Any]:
    """A future resolving to convert(source's result), or to source's exception."""
    target: Future[Any] = Future()

    def settle(done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:
            target.set_exception(error)
            return
        try:
            target.set_result(convert(done.result()))
        except Exception as err:  # a result that cannot be converted fails its step
            target.set_exception(err)

    source.add_done_callback(settle)
    return target


class PipelineExecutor(Executor):
    """Drives the stage chain; instantiated by EngineCore on the engine thread."""

    supports_pp = True
    link: PipelineLink  # set by bind()
    async_scheduling = True  # set by bind()
    configure_timeout_s: float = 300.0
    _kv_layout = ""

    @classmethod
    def bind(
        cls, link: PipelineLink, configure_timeout_s: float, async_scheduling: bool = True
    ) -> type[PipelineExecutor]:
        """A subclass tied to one PipelineLink (vLLM instantiates the class itself)."""
        attrs = {
            "link": link,
            "configure_timeout_s": configure_timeout_s,
            "async_scheduling": async_scheduling,
        }
        return type("BoundPipelineExecutor", (cls,), attrs)

    @classmethod
    def supports_async_scheduling(cls) -> bool:
        """vLLM asks before it enables async scheduling: the stages fill in the tokens."""
        return cls.async_scheduling

    def _init_executor(self) -> None:
        self._last_sample: Future[Any] | None = None
        self._kv_layout = ""
        # The scheduler's requests, set by the engine host once EngineCore exists.
        self.requests: Mapping[str, Any] | None = None
        # A structured-output step waits here for its grammar bitmask, which
        # EngineCore computes after execute_model and hands to sample_tokens.
        self._plan_awaiting_grammar: tuple[wire.StepPlan, int] | None = None
        # Which steps in flight sample the tokens a plan still lacks (async scheduling).
        self.sources = TokenSources()

    # ------------------------------------------------------------ start-up

    def get_kv_cache_specs(self) -> list[dict[str, Any]]:
        return [decode_kv(r.info.kv_cache_specs) for r in self.link.chain]

    def determine_available_memory(self) -> list[int]:
        return [r.info.available_kv_bytes for r in self.link.chain]

    def get_supported_kv_cache_layouts(self) -> list[list[str]]:
        return [list(r.info.kv_cache_layouts) for r in self.link.chain]

    def set_kv_cache_layout(self, layout_name: str) -> None:
        self._kv_layout = layout_name

    def initialize_from_config(self, kv_cache_configs: list[Any]) -> None:
        self.link.configure(kv_cache_configs, self._kv_layout, self.configure_timeout_s)

    def compile_or_warm_up_model(self) -> None:
        return None  # each stage warms up when it allocates its KV cache

    def collective_rpc(  # type: ignore[override]
        self,
        method: str | Callable[..., Any],
        timeout: float | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        non_block: bool = False,
    ) -> Any:
        name = method if isinstance(method, str) else getattr(method, "__name__", "?")
        results: list[Any]
        if name == "get_supported_tasks":
            results = [("generate",)] * len(self.link.chain)
        elif name in ("check_health", "shutdown", "reset_mm_cache", "reset_encoder_cache"):
            results = [None] * len(self.link.chain)
        else:
            raise NotImplementedError(f"layerbus stages do not support the RPC {name!r}")
        return _done(results) if non_block else results

    # ------------------------------------------------------------ steps

    def _plan(self, scheduler_output: Any) -> tuple[wire.StepPlan, int]:
        """The wire plan of one step and its step id; placeholders get their sources."""
        with timed("coordinator", "plan"):
            return self._make_plan(scheduler_output)

    def _make_plan(self, scheduler_output: Any) -> tuple[wire.StepPlan, int]:
        # A single stage may run vLLM's async model runner, which reads histories.
        histories = len(self.link.chain) == 1
        plan = plan_from_scheduler_output(scheduler_output, self.requests, histories)
        step_id = self.link.new_step_id()
        self.sources.forget(scheduler_output.finished_req_ids)
        if self.requests is not None:
            needed = {
                rid: sum(1 for t in row if t == PLACEHOLDER)
                for rid, row in zip(plan.cached.req_ids, plan.cached.new_token_ids, strict=True)
            }
            rows = []
            for rid in scheduler_output.num_scheduled_tokens:
                request = self.requests[rid]
                produces = not request.is_prefill_chunk
                rows.append(
                    Row(
                        req_id=rid,
                        in_flight=request.num_output_placeholders - int(produces),
                        needed=needed.get(rid, 0),
                        produces=produces,
                    )
                )
            plan.token_sources = self.sources.plan(step_id, rows)
        return plan, step_id

    def execute_model(  # type: ignore[override]
        self, scheduler_output: Any, non_block: bool = False
    ) -> Any:
        plan, step_id = self._plan(scheduler_output)
        if (
            scheduler_output.has_structured_output_requests
            and scheduler_output.total_num_scheduled_tokens > 0
        ):
            self._plan_awaiting_grammar = (plan, step_id)
            self._last_sample = None
            return _done(None) if non_block else None
        sent = self.link.submit(plan, step_id)
        if scheduler_output.total_num_scheduled_tokens == 0:
            # EngineCore samples nothing for an empty step and takes this future
            # as its output; the plan still travels so stages see finished requests.
            self._last_sample = None
            empty = _mapped(sent, lambda _: EMPTY_MODEL_RUNNER_OUTPUT)
            return empty if non_block else empty.result()
        result = _mapped(sent, runner_output_from_result)
        self._last_sample = result
        return _done(None) if non_block else None

    def sample_tokens(  # type: ignore[override]
        self, grammar_output: Any, non_block: bool = False
    ) -> Any:
        waiting, self._plan_awaiting_grammar = self._plan_awaiting_grammar, None
        if waiting is not None:
            plan, step_id = waiting
            if grammar_output is not None:
                plan.grammar = mask_from_grammar_output(grammar_output)
            self._last_sample = _mapped(self.link.submit(plan, step_id), runner_output_from_result)
        future = self._last_sample
        self._last_sample = None
        if future is None:
            raise PipelineFailed("sample_tokens without a preceding step with tokens")
        return future if non_block else future.result()

    def take_draft_token_ids(self) -> None:
        return None

    def check_health(self) -> None:
        failure = self.link.failure or self.link.broken
        if failure is not None:
            raise PipelineFailed(failure)

    def shutdown(self) -> None:
        self.link.close()
