"""The engine thread: hosts vLLM's EngineCore and turns its outputs into wire messages."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from services.coordinator.authorization import may_abort
from services.coordinator.engine_stats import EngineStats
from services.coordinator.executor import PipelineExecutor
from services.coordinator.micro_batch_control import Measure, wanted_micro_batches
from services.coordinator.pipeline import ChainBroken, PipelineFailed, PipelineLink
from services.coordinator.sampling import engine_tokenizer, sampling_params
from services.coordinator.scheduler import MicroBatchScheduler
from services.coordinator.structured import verify_structured
from shared import wire
from shared.context_length import context_length_error
from shared.engine_settings import EngineSettings, build_vllm_config
from shared.step_phases import timed

log = logging.getLogger("layerbus.coordinator")

# Seconds between two decisions to raise M (each new M is measured first).
RAISE_WINDOW_S = 5.0

Send = Callable[[bytes, msgspec.Struct], None]


def _logprobs(lp: Any, count: int) -> list[wire.TokenLogprob] | None:
    if lp is None:
        return None
    rows = []
    ids, values, ranks = lp.logprob_token_ids, lp.logprobs, lp.sampled_token_ranks
    for i in range(min(count, len(ids))):
        top = [
            wire.TopLogprob(token_id=int(t), logprob=float(v))
            for t, v in zip(ids[i][1:], values[i][1:], strict=False)
        ]
        rows.append(
            wire.TokenLogprob(
                token_id=int(ids[i][0]), logprob=float(values[i][0]), rank=int(ranks[i]), top=top
            )
        )
    return rows


def count_module_parameters() -> int:
    """Parameters held by any torch module alive in this process (the coordinator: none)."""
    import gc

    import torch

    total = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Module):
            total += sum(p.numel() for p in obj.parameters(recurse=False))
    return total


class EngineHost:
    """Owns EngineCore; runs on its own thread and never touches the ROUTER socket.

    States: starting -> serving <-> recovering (a chain stage died: every
    running request is preempted, the chain is rebuilt from live stages and
    the requests recompute) -> unavailable (no chain within the recovery
    timeout: requests fail, new ones are refused until a chain exists).
    """

    def __init__(
        self,
        engine: EngineSettings,
        link: PipelineLink,
        send: Send,
        configure_timeout_s: float,
        micro_batches: int = 0,
        recovery_timeout_s: float = 60.0,
        max_micro_batches: int = 0,
        async_scheduling: bool = True,
    ) -> None:
        self.engine_settings = engine
        self.link = link
        self.send = send
        self.configure_timeout_s = configure_timeout_s
        self.recovery_timeout_s = recovery_timeout_s
        # Plan each micro-batch's next step before its tokens are back (vLLM's async
        # scheduling): two steps per micro-batch in flight, the stages fill in tokens.
        self.async_scheduling = async_scheduling
        self.depth = 2 if async_scheduling else 1
        # A fixed M when set; else one per stage, raised while serving up to the cap
        # (default 4 per stage; a single stage has nothing to overlap).
        stages = len(link.chain)
        self.micro_batches = micro_batches or stages
        if micro_batches:
            self.max_micro_batches = micro_batches
        elif max_micro_batches:
            self.max_micro_batches = max(stages, max_micro_batches)
        else:
            self.max_micro_batches = 4 * stages if stages > 1 else 1
        self._window_start = 0.0
        self._window_beats: dict[str, tuple[float, float]] = {}
        self.commands: queue.Queue[tuple[bytes, msgspec.Struct]] = queue.Queue()
        self.owner: dict[str, bytes] = {}
        self.prompt_len: dict[str, int] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.stopping = threading.Event()
        self.snapshot: dict[str, Any] = {}
        self.max_model_len = engine.max_model_len
        self.vllm_config: Any = None  # set by start_engine
        self.core: Any = None
        self.coordinator_parameters = 0
        self.state = "starting"
        self.recoveries = 0
        self.stats: EngineStats | None = None  # vllm:* metrics

    # ------------------------------------------------------------ start-up

    def start_engine(self) -> None:
        from collections import deque

        from vllm.v1.engine.core import EngineCore

        chain = self.link.chain
        # The scheduler plans for vLLM's V1 runner, which the stages run (V2 staggers
        # decodes for its own pipeline ring).
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        executor = PipelineExecutor.bind(
            self.link, self.configure_timeout_s, self.async_scheduling
        )
        config = build_vllm_config(
            self.engine_settings,
            pipeline_size=len(chain),
            executor=executor,
            scheduler_cls=MicroBatchScheduler.bind(
                self.micro_batches, self.max_micro_batches, self.async_scheduling
            ),
            tokenizer=True,
            # vLLM's own flag only where its V1 runner allows it (one stage): with
            # pipeline parallelism it refuses V1 + async, and the CPU platform turns it
            # off anyway. Our scheduler class and batch queue plan ahead either way.
            async_scheduling=self.async_scheduling and len(chain) == 1,
        )
        self.vllm_config = config
        self.max_model_len = config.model_config.max_model_len
        # What vLLM's InputProcessor hands update_from_generation_config (eos ids).
        self.generation_config = config.model_config.try_get_generation_config()
        hf = config.model_config.hf_config
        eos = getattr(config.model_config.hf_text_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(hf, "eos_token_id", None)
        self.eos = eos[0] if isinstance(eos, list) else eos
        core = EngineCore(config, executor_class=executor, log_stats=True)
        # Steps in flight: one per micro-batch, two with async scheduling (vLLM sizes
        # the queue by stages).
        core.batch_queue_size = self.depth * self.micro_batches
        pipelined = self.depth * self.max_micro_batches > 1
        core.batch_queue = deque(maxlen=self.depth * self.max_micro_batches) if pipelined else None
        core.step_fn = core.step if core.batch_queue is None else core.step_with_batch_queue
        core.model_executor.requests = core.scheduler.requests  # type: ignore[attr-defined]
        self.core = core
        self.stats = EngineStats(config)
        log.info(
            "engine ready: %d stages, %d KV blocks, %d micro-batches (up to %d)",
            len(chain),
            config.cache_config.num_gpu_blocks,
            self.micro_batches,
            self.max_micro_batches,
        )

    def run(self) -> None:
        """Thread body: start EngineCore, then loop; an unexpected error is never silent."""
        try:
            self.start_engine()
        except Exception as err:
            log.exception("engine start-up failed")
            self.error = f"{type(err).__name__}: {err}"
            self.ready.set()
            return
        self.coordinator_parameters = count_module_parameters()
        self.state = "serving"
        self._update_snapshot()
        self.ready.set()
        try:
            self._loop()
        except Exception as err:  # a bug: say so, turn /health to 503, fail requests
            log.exception("the engine thread stopped")
            self.error = f"engine thread stopped: {type(err).__name__}: {err}"
            self._fail_requests(list(self.owner), self.error)

    def _loop(self) -> None:
        core = self.core
        while not self.stopping.is_set():
            if self.link.broken is not None:
                self._recover()
                continue
            busy = core.scheduler.has_requests() or bool(core.batch_queue)
            self._drain_commands(block=not busy)
            if not (core.scheduler.has_requests() or core.batch_queue):
                continue
            try:
                outputs, executed = core.step_fn()
                core.post_step(executed)
                if self.stats is not None:
                    self.stats.record(outputs)
            except ChainBroken:
                continue  # _recover() runs at the top of the loop
            except Exception as err:
                self._fail_everything(f"{type(err).__name__}: {err}")
                self.link.release_failed_steps()
                continue
            if outputs:
                with timed("coordinator", "publish"):
                    self._publish(outputs)
            self._maybe_raise_micro_batches()
            self._update_snapshot()

    def _maybe_raise_micro_batches(self) -> None:
        """Apply services/coordinator/micro_batch_control.py's rule once per window."""
        if self.micro_batches >= self.max_micro_batches:
            return
        now = time.monotonic()
        if now - self._window_start < RAISE_WINDOW_S:
            return
        in_flight = self.link.take_in_flight_average()
        busiest = 0.0
        for r in self.link.chain:
            start = self._window_beats.get(r.name)
            if r.beat is not None and start is not None and r.beat_at - start[1] > 0.5:
                share = (r.beat.busy_s - start[0]) / (r.beat_at - start[1])
                busiest = max(busiest, share)
        self._start_window(now)
        measure = Measure(
            in_flight=in_flight,
            busiest_stage=busiest,
            running=len(self.core.scheduler.running),
        )
        wanted = wanted_micro_batches(self.micro_batches, self.max_micro_batches, measure)
        if wanted == self.micro_batches:
            return
        log.info(
            "raising micro-batches %d -> %d: %.1f in flight on average, yet the busiest "
            "stage computed only %.0f%% of the last %.0f s (%d requests running)",
            self.micro_batches,
            wanted,
            measure.in_flight,
            100 * measure.busiest_stage,
            RAISE_WINDOW_S,
            measure.running,
        )
        self.micro_batches = wanted
        self.core.scheduler.micro.grow(wanted)
        self.core.batch_queue_size = self.depth * wanted

    def _start_window(self, now: float) -> None:
        self._window_start = now
        self._window_beats = {
            r.name: (r.beat.busy_s, r.beat_at) for r in self.link.chain if r.beat is not None
        }

    # ------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Rebuild the chain from live stages; running requests resume by recompute."""
        reason = self.link.broken
        self.state = "recovering"
        self.recoveries += 1
        log.warning("pipeline broken (%s); rebuilding the chain", reason)
        core = self.core
        if core.batch_queue:
            core.batch_queue.clear()
        core.scheduler.restart_all()
        core.model_executor.sources.clear()
        self._update_snapshot()
        deadline = time.monotonic() + self.recovery_timeout_s
        survivors = [r for r in self.link.chain if r.state != "dead"]
        self.link.request_chain()
        timed_out = False
        while not self.stopping.is_set():
            self._drain_commands(block=True)
            chain = self.link.take_offer()
            if chain is not None:
                names = " -> ".join(r.name for r in chain)
                try:
                    self.link.broken = None
                    # Every stage drops every request: a stage may hold tokens of steps
                    # whose results were lost (the token ring), so resumed requests are
                    # taken up afresh from the coordinator's state (ResumedRequestPlan).
                    self.link.reconfigure(chain, self.configure_timeout_s, [])
                except PipelineFailed as err:
                    log.error("could not rebuild the chain %s: %s", names, err)
                    self.link.broken = str(err)
                    self.link.request_chain()
                    continue
                if self.link.broken is not None:
                    continue  # a stage of the new chain died while configuring
                log.warning(
                    "chain rebuilt (generation %d): %s; %d requests resume",
                    self.link.generation,
                    names,
                    len(core.scheduler.requests),
                )
                self.state = "serving"
                self._update_snapshot()
                return
            if not timed_out and time.monotonic() > deadline:
                timed_out = True
                missing = ", ".join(
                    f"{a}:{b}"
                    for a, b in sorted(self.link.kv_configs)
                    if not any(r.layers == (a, b) for r in survivors)
                )
                message = (
                    f"pipeline unavailable: no stage for layers {missing or '?'} joined within "
                    f"{self.recovery_timeout_s:.0f} s (LAYERBUS_RECOVERY_TIMEOUT_S); "
                    "start a stage for those layers"
                )
                log.error("%s", message)
                self.link.failure = message
                self.state = "unavailable"
                rids = list(self.owner)
                if rids:
                    core.abort_requests(rids)
                self._fail_requests(rids, message)
                self._update_snapshot()

    # ------------------------------------------------------------ commands

    def _drain_commands(self, block: bool) -> None:
        try:
            item = self.commands.get(timeout=0.05) if block else self.commands.get_nowait()
        except queue.Empty:
            if block:
                self._update_snapshot()
            return
        while True:
            self._handle(*item)
            try:
                item = self.commands.get_nowait()
            except queue.Empty:
                return

    def _handle(self, identity: bytes, msg: msgspec.Struct) -> None:
        if isinstance(msg, wire.Generate):
            self._add(identity, msg)
        elif isinstance(msg, wire.Abort):
            # Only the gateway that submitted a request may abort it.
            known = [rid for rid in msg.request_ids if may_abort(self.owner.get(rid), identity)]
            if known:
                self.core.abort_requests(known)
                for rid in known:
                    self._forget(rid)
                self._update_snapshot()

    def _add(self, identity: bytes, msg: wire.Generate) -> None:
        from vllm.v1.engine import EngineCoreRequest

        rid = msg.request_id
        error = None
        if rid in self.owner:
            error = f"request id {rid!r} is already running"
        elif not msg.prompt_token_ids:
            error = "the prompt is empty"
        elif too_long := context_length_error(
            len(msg.prompt_token_ids), msg.sampling.max_tokens, self.max_model_len
        ):
            error = too_long
        elif self.link.failure is not None:
            error = self.link.failure
        if error is None:
            try:
                tokenizer = engine_tokenizer(self.vllm_config)
                params = sampling_params(msg.sampling, self.generation_config, self.eos, tokenizer)
                if params.structured_outputs is not None:
                    verify_structured(params, self.vllm_config)
                request = EngineCoreRequest(
                    request_id=rid,
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
                if self.stats is not None:
                    self.stats.add(rid, request.arrival_time, len(msg.prompt_token_ids), params)
            except Exception as err:  # vLLM's validation errors are not ValueErrors
                error = f"{type(err).__name__}: {err}"
        if error is not None:
            out = wire.RequestOutput(
                request_id=rid,
                token_ids=[],
                finish_reason="error",
                error=error,
                invalid=error != self.link.failure,
            )
            self.send(identity, wire.Outputs(items=[out]))
            return
        self.owner[rid] = identity
        self.prompt_len[rid] = len(msg.prompt_token_ids)

    def _forget(self, rid: str) -> None:
        self.owner.pop(rid, None)
        self.prompt_len.pop(rid, None)
        if self.stats is not None:
            self.stats.forget(rid)

    # ------------------------------------------------------------ outputs

    def _publish(self, outputs: dict[int, Any]) -> None:
        by_owner: dict[bytes, list[wire.RequestOutput]] = {}
        for eco in outputs.values():
            for o in eco.outputs:
                identity = self.owner.get(o.request_id)
                if identity is None:
                    continue
                finish = None if o.finish_reason is None else str(o.finish_reason)
                item = wire.RequestOutput(
                    request_id=o.request_id,
                    token_ids=list(o.new_token_ids),
                    logprobs=_logprobs(o.new_logprobs, len(o.new_token_ids)),
                    finish_reason=finish,
                    stop_reason=o.stop_reason,
                    num_prompt_tokens=self.prompt_len.get(o.request_id, 0),
                    num_cached_tokens=getattr(o, "num_cached_tokens", 0) or 0,
                )
                by_owner.setdefault(identity, []).append(item)
                if finish is not None:
                    self._forget(o.request_id)
        for identity, items in by_owner.items():
            self.send(identity, wire.Outputs(items=items))

    def _fail_everything(self, reason: str) -> None:
        log.error("pipeline step failed: %s", reason)
        rids = list(self.owner)
        if rids:
            self.core.abort_requests(rids)
        if self.core.batch_queue:
            self.core.batch_queue.clear()
        self.core.scheduler.micro.reset_flight()
        self._fail_requests(rids, reason)

    def _fail_requests(self, rids: list[str], reason: str) -> None:
        by_owner: dict[bytes, list[wire.RequestOutput]] = {}
        for rid in rids:
            identity = self.owner.get(rid)
            if identity is None:
                continue
            item = wire.RequestOutput(
                request_id=rid, token_ids=[], finish_reason="error", error=reason
            )
            by_owner.setdefault(identity, []).append(item)
            self._forget(rid)
        for identity, items in by_owner.items():
            self.send(identity, wire.Outputs(items=items))

    def _update_snapshot(self) -> None:
        sched = self.core.scheduler
        pool = sched.kv_cache_manager.block_pool
        in_flight, busy = self.link.in_flight()
        self.snapshot = {
            "num_total_blocks": int(pool.num_gpu_blocks) - 1,
            "num_free_blocks": int(pool.get_num_free_blocks()),
            "num_running": len(sched.running),
            "num_waiting": len(sched.waiting),
            "max_batches_in_flight": self.link.max_in_flight,
            "batches_in_flight": busy,
            "steps": self.link.steps_sent,
            "empty_steps": self.link.empty_steps_sent,
            "micro_batches": self.micro_batches,
            "max_micro_batches": self.max_micro_batches,
            "round_trip_ms": round(self.link.round_trip_ms, 3),
            "micro_batch_sizes": sched.micro_batch_sizes(),
            "generation": self.link.generation,
            "recoveries": self.recoveries,
            "coordinator_parameters": self.coordinator_parameters,
        }
