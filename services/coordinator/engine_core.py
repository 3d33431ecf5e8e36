"""The engine-core side: vLLM's EngineCore with its batch queue, requests and outputs.

As vLLM separates EngineCore (schedule, execute, update) from EngineCoreProc (its
busy loop and sockets), PipelineEngineCore holds the engine and what follows from
one step: the batch queue sized for micro-batches, requests in (wire.Generate ->
EngineCoreRequest), aborts, outputs to their gateways (output_publisher.py), and
the engine's part of a failure or a chain rebuild. It owns no thread and no
socket: services/coordinator/engine.py's EngineHost drives it on the engine thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from services.coordinator.authorization import may_abort
from services.coordinator.engine_stats import EngineStats
from services.coordinator.executor import PipelineExecutor
from services.coordinator.output_publisher import OutputPublisher
from services.coordinator.pipeline import ChainBroken, PipelineLink
from services.coordinator.sampling import engine_tokenizer, sampling_params
from services.coordinator.scheduler import MicroBatchScheduler
from services.coordinator.structured import verify_structured
from shared import wire
from shared.context_length import context_length_error
from shared.engine_settings import EngineSettings, build_vllm_config
from shared.step_phases import timed

log = logging.getLogger("layerbus.coordinator")


def pipeline_vllm_config(
    engine: EngineSettings,
    link: PipelineLink,
    configure_timeout_s: float,
    micro_batches: int,
    max_micro_batches: int,
    async_scheduling: bool,
) -> tuple[Any, type[PipelineExecutor]]:
    """The VllmConfig for this chain and the executor class bound to its link."""
    chain = link.chain
    # The scheduler plans for vLLM's V1 runner, which the stages run (V2 staggers
    # decodes for its own pipeline ring).
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    executor = PipelineExecutor.bind(link, configure_timeout_s, async_scheduling)
    config = build_vllm_config(
        engine,
        pipeline_size=len(chain),
        executor=executor,
        scheduler_cls=MicroBatchScheduler.bind(micro_batches, max_micro_batches, async_scheduling),
        tokenizer=True,
        # vLLM's own flag only where its V1 runner allows it (one stage): with
        # pipeline parallelism it refuses V1 + async, and the CPU platform turns it
        # off anyway. Our scheduler class and batch queue plan ahead either way.
        async_scheduling=async_scheduling and len(chain) == 1,
    )
    return config, executor


def eos_token_id(model_config: Any) -> int | None:
    """The eos id vLLM's InputProcessor hands update_from_generation_config."""
    eos = getattr(model_config.hf_text_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model_config.hf_config, "eos_token_id", None)
    return eos[0] if isinstance(eos, list) else eos


def size_batch_queue(core: Any, depth: int, micro_batches: int, max_micro_batches: int) -> None:
    """Steps in flight: `depth` per micro-batch (vLLM sizes the queue by stages).

    The deque holds the most M can grow to; batch_queue_size, which
    step_with_batch_queue reads on every call, is what M allows now.
    """
    core.batch_queue_size = depth * micro_batches
    pipelined = depth * max_micro_batches > 1
    core.batch_queue = deque(maxlen=depth * max_micro_batches) if pipelined else None
    core.step_fn = core.step if core.batch_queue is None else core.step_with_batch_queue


def admission_error(
    msg: wire.Generate, running: bool, max_model_len: int, failure: str | None
) -> str | None:
    """Why EngineCore must not take this Generate (running: its id is taken), or None."""
    if running:
        return f"request id {msg.request_id!r} is already running"
    if not msg.prompt_token_ids:
        return "the prompt is empty"
    too_long = context_length_error(
        len(msg.prompt_token_ids), msg.sampling.max_tokens, max_model_len
    )
    if too_long:
        return too_long
    return failure


class PipelineEngineCore:
    """vLLM's EngineCore over the stage chain, its requests and outputs; engine thread only."""

    def __init__(
        self,
        core: Any,
        link: PipelineLink,
        publisher: OutputPublisher,
        depth: int,
        micro_batches: int,
        max_micro_batches: int,
        max_model_len: int,
        vllm_config: Any = None,
    ) -> None:
        self.core = core
        self.link = link
        self.publisher = publisher
        self.depth = depth  # steps in flight per micro-batch: 2 with async scheduling
        self.max_model_len = max_model_len
        self.vllm_config = vllm_config
        self.generation_config: dict[str, Any] = {}
        self.eos: int | None = None
        size_batch_queue(core, depth, micro_batches, max_micro_batches)
        # The executor plans placeholders from the scheduler's Request objects.
        core.model_executor.requests = core.scheduler.requests

    @classmethod
    def start(
        cls,
        config: Any,
        executor: type[PipelineExecutor],
        link: PipelineLink,
        publisher: OutputPublisher,
        depth: int,
        micro_batches: int,
        max_micro_batches: int,
    ) -> PipelineEngineCore:
        """Build vLLM's EngineCore (it configures every stage) and wrap it."""
        from vllm.v1.engine.core import EngineCore

        # What vLLM's InputProcessor hands update_from_generation_config.
        generation_config = config.model_config.try_get_generation_config()
        eos = eos_token_id(config.model_config)
        core = EngineCore(config, executor_class=executor, log_stats=True)
        engine = cls(
            core,
            link,
            publisher,
            depth,
            micro_batches,
            max_micro_batches,
            config.model_config.max_model_len,
            config,
        )
        engine.generation_config, engine.eos = generation_config, eos
        publisher.stats = EngineStats(config)
        return engine

    # ------------------------------------------------------------ steps

    def has_work(self) -> bool:
        """Requests to schedule, or steps in flight."""
        return bool(self.core.scheduler.has_requests() or self.core.batch_queue)

    def step(self) -> bool:
        """One EngineCore step; its outputs go to their gateways.

        False when the step failed: a broken chain (the caller recovers) or any
        other error, which fails every request and releases the failed steps'
        places in the first stage's token ring.
        """
        core = self.core
        try:
            outputs, executed = core.step_fn()
            core.post_step(executed)
            if self.publisher.stats is not None:
                self.publisher.stats.record(outputs)
        except ChainBroken:
            return False
        except Exception as err:
            self.fail_everything(f"{type(err).__name__}: {err}")
            self.link.release_failed_steps()
            return False
        if outputs:
            with timed("coordinator", "publish"):
                self.publisher.publish(outputs)
        return True

    def grow(self, micro_batches: int) -> None:
        """Run `micro_batches` micro-batches from the next step on."""
        self.core.scheduler.micro.grow(micro_batches)
        self.core.batch_queue_size = self.depth * micro_batches

    def num_running(self) -> int:
        return len(self.core.scheduler.running)

    def num_requests(self) -> int:
        """Requests vLLM's scheduler holds (running, waiting or preempted)."""
        return len(self.core.scheduler.requests)

    # ------------------------------------------------------------ requests

    def add(self, identity: bytes, msg: wire.Generate) -> None:
        """Hand a Generate to EngineCore, or answer its gateway with the reason it cannot."""
        rid = msg.request_id
        error = admission_error(
            msg, self.publisher.owner_of(rid) is not None, self.max_model_len, self.link.failure
        )
        if error is None:
            try:
                self._add(msg)
            except Exception as err:  # vLLM's validation errors are not ValueErrors
                error = f"{type(err).__name__}: {err}"
        if error is not None:
            self.publisher.refuse(identity, rid, error, invalid=error != self.link.failure)
            return
        self.publisher.adopt(rid, identity, len(msg.prompt_token_ids))

    def _add(self, msg: wire.Generate) -> None:
        from vllm.v1.engine import EngineCoreRequest

        tokenizer = engine_tokenizer(self.vllm_config)
        params = sampling_params(msg.sampling, self.generation_config, self.eos, tokenizer)
        if params.structured_outputs is not None:
            verify_structured(params, self.vllm_config)
        request = EngineCoreRequest(
            request_id=msg.request_id,
            prompt_token_ids=list(msg.prompt_token_ids),
            mm_features=None,
            sampling_params=params,
            pooling_params=None,
            arrival_time=time.time(),
            lora_request=None,
            cache_salt=None,
            data_parallel_rank=None,
        )
        req, wave = self.core.preprocess_add_request(request)
        self.core.add_request(req, wave)
        if self.publisher.stats is not None:
            self.publisher.stats.add(
                msg.request_id, request.arrival_time, len(msg.prompt_token_ids), params
            )

    def abort(self, identity: bytes, request_ids: list[str]) -> bool:
        """Abort the requests `identity` submitted; True if there were any."""
        # Only the gateway that submitted a request may abort it.
        known = [rid for rid in request_ids if may_abort(self.publisher.owner_of(rid), identity)]
        if not known:
            return False
        self.core.abort_requests(known)
        for rid in known:
            self.publisher.forget(rid)
        return True

    # ------------------------------------------------------------ failures

    def fail_everything(self, reason: str) -> None:
        """A step failed: every request ends with `reason`; no step stays queued."""
        log.error("pipeline step failed: %s", reason)
        rids = self.publisher.running()
        if rids:
            self.core.abort_requests(rids)
        if self.core.batch_queue:
            self.core.batch_queue.clear()
        self.core.scheduler.micro.reset_flight()
        self.publisher.fail(rids, reason)

    def abort_all(self, reason: str) -> None:
        """No chain to run on: every request leaves EngineCore and ends with `reason`."""
        rids = self.publisher.running()
        if rids:
            self.core.abort_requests(rids)
        self.publisher.fail(rids, reason)

    def restart_all(self) -> None:
        """The chain broke: steps in flight are lost, running requests will recompute."""
        if self.core.batch_queue:
            self.core.batch_queue.clear()
        self.core.scheduler.restart_all()
        self.core.model_executor.sources.clear()

    # ------------------------------------------------------------ /status

    def counts(self) -> dict[str, Any]:
        """The scheduler's part of /status: KV blocks, requests, micro-batch sizes."""
        sched = self.core.scheduler
        pool = sched.kv_cache_manager.block_pool
        return {
            "num_total_blocks": int(pool.num_gpu_blocks) - 1,
            "num_free_blocks": int(pool.get_num_free_blocks()),
            "num_running": len(sched.running),
            "num_waiting": len(sched.waiting),
            "micro_batch_sizes": sched.micro_batch_sizes(),
        }
