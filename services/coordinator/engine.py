"""The engine thread: its loop, the commands the I/O thread hands it, recovery's wait.

Like vLLM's EngineCoreProc around EngineCore, EngineHost is the thread side:
it starts the engine core (engine_core.py: batch queue, requests, outputs),
runs the busy loop, takes Generate and Abort from its queue, raises the number
of micro-batches while serving (micro_batch_control.py) and waits for a
rebuilt chain after a stage died (recovery.py). It never touches the ROUTER
socket: outputs go through `send`, which queues them for the I/O thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Any

import msgspec

from services.coordinator.engine_core import PipelineEngineCore, pipeline_vllm_config
from services.coordinator.kv_resplit import ChainKv
from services.coordinator.micro_batch_control import (
    RAISE_WINDOW_S,
    Measure,
    RaiseWindow,
    micro_batch_range,
    wanted_micro_batches,
)
from services.coordinator.output_publisher import OutputPublisher, Send
from services.coordinator.pipeline import PipelineFailed, PipelineLink
from services.coordinator.recovery import ChainRebuild, Rebuilt, Unavailable
from shared import wire
from shared.engine_settings import EngineSettings

log = logging.getLogger("layerbus.coordinator")


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
    """The engine thread's loop and command intake around PipelineEngineCore; engine thread.

    States: starting -> serving <-> recovering (a chain stage died: every
    running request is preempted, the chain is rebuilt from live stages and
    the requests recompute) -> unavailable (no chain within the recovery
    timeout: requests fail, new ones are refused until a chain exists).
    The I/O thread reads ready, error, state, snapshot, max_model_len and
    vllm_config, and puts commands; everything else is the engine thread's.
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
        self.micro_batches, self.max_micro_batches = micro_batch_range(
            len(link.chain), micro_batches, max_micro_batches
        )
        self.window = RaiseWindow()
        self.cpu_wait_noted = 0  # the M at which the CPU-wait hold was last logged
        self.commands: queue.Queue[tuple[bytes, msgspec.Struct]] = queue.Queue()
        self.publisher = OutputPublisher(send)
        self.ready = threading.Event()
        self.error: str | None = None
        # The engine did not start because a stage of its chain died or refused its
        # Configure (the I/O thread drops that stage and starts again without it).
        self.stage_failed = False
        self.stopping = threading.Event()
        self.snapshot: dict[str, Any] = {}
        self.max_model_len = engine.max_model_len
        self.vllm_config: Any = None  # set by start_engine
        self.core: PipelineEngineCore | None = None
        self.chain_kv: ChainKv | None = None  # sizes each rebuilt chain's KV cache
        self.coordinator_parameters = 0
        self.state = "starting"
        self.recoveries = 0
        self.last_recovery_s = 0.0  # from the chain breaking to serving again, last time

    # ------------------------------------------------------------ start-up

    def start_engine(self) -> None:
        config, executor = pipeline_vllm_config(
            self.engine_settings,
            self.link,
            self.configure_timeout_s,
            self.micro_batches,
            self.max_micro_batches,
            self.async_scheduling,
        )
        self.vllm_config = config
        self.max_model_len = config.model_config.max_model_len
        self.core = PipelineEngineCore.start(
            config,
            executor,
            self.link,
            self.publisher,
            self.depth,
            self.micro_batches,
            self.max_micro_batches,
        )
        self.chain_kv = ChainKv(config, self.core.core.scheduler, self.link.kv_configs)
        log.info(
            "engine ready: %d stages, %d KV blocks, %d micro-batches (up to %d)",
            len(self.link.chain),
            config.cache_config.num_gpu_blocks,
            self.micro_batches,
            self.max_micro_batches,
        )

    def run(self) -> None:
        """Thread body: start EngineCore, then loop; an unexpected error is never silent."""
        try:
            self.start_engine()
        except PipelineFailed as err:  # a stage died or refused: said, not a traceback
            log.error("the engine could not start on this chain: %s", err)
            self.error = f"{type(err).__name__}: {err}"
            self.stage_failed = True
            self.ready.set()
            return
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
            self.publisher.fail(self.publisher.running(), self.error)

    def _engine(self) -> PipelineEngineCore:
        assert self.core is not None, "the engine core runs once start_engine returned"
        return self.core

    def _loop(self) -> None:
        core = self._engine()
        while not self.stopping.is_set():
            if self.link.broken is not None:
                self._recover()
                continue
            self._drain_commands(block=not core.has_work())
            if not core.has_work():
                continue
            if not core.step():
                continue  # a broken chain: _recover() runs at the top of the loop
            self._maybe_raise_micro_batches()
            self._update_snapshot()

    def _maybe_raise_micro_batches(self) -> None:
        """Apply services/coordinator/micro_batch_control.py's rule once per window."""
        if self.micro_batches >= self.max_micro_batches:
            return
        now = time.monotonic()
        if not self.window.due(now):
            return
        in_flight = self.link.take_in_flight_average()
        busiest = self.window.busiest_share(self.link.chain)
        cpu_wait = self.window.cpu_wait_share(self.link.chain)
        self.window.restart(now, self.link.chain)
        core = self._engine()
        measure = Measure(in_flight, busiest, core.num_running(), cpu_wait)
        wanted = wanted_micro_batches(self.micro_batches, self.max_micro_batches, measure)
        if wanted == self.micro_batches:
            self._note_cpu_wait(measure)
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
        core.grow(wanted)

    def _note_cpu_wait(self, measure: Measure) -> None:
        """Say once per M when the stages' wait for a CPU is all that holds M."""
        held = wanted_micro_batches(
            self.micro_batches, self.max_micro_batches, replace(measure, cpu_wait=0.0)
        )
        if held == self.micro_batches or self.cpu_wait_noted == self.micro_batches:
            return
        self.cpu_wait_noted = self.micro_batches
        log.info(
            "keeping %d micro-batches: a chain stage waited for a CPU %.0f%% of the last %.0f s "
            "(its host has fewer free cores than busy processes; more micro-batches would add "
            "work per token, not throughput)",
            self.micro_batches,
            100 * measure.cpu_wait,
            RAISE_WINDOW_S,
        )

    # ------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Rebuild the chain from live stages; running requests resume by recompute."""
        reason = self.link.broken
        core = self._engine()
        self.state = "recovering"
        self.recoveries += 1
        log.warning("pipeline broken (%s); rebuilding the chain", reason)
        core.restart_all()
        self._update_snapshot()
        prepare = self.chain_kv.prepare if self.chain_kv is not None else None
        rebuild = ChainRebuild(
            self.link, self.configure_timeout_s, self.recovery_timeout_s, prepare=prepare
        )
        while not self.stopping.is_set():
            self._drain_commands(block=True)
            outcome = rebuild.poll()
            if isinstance(outcome, Rebuilt):
                log.warning(
                    "chain rebuilt (generation %d): %s; %d requests resume",
                    self.link.generation,
                    outcome.names,
                    core.num_requests(),
                )
                self.last_recovery_s = time.monotonic() - self.link.broken_at
                log.warning("serving again %.1f s after the chain broke", self.last_recovery_s)
                self.state = "serving"
                self._update_snapshot()
                return
            if isinstance(outcome, Unavailable):
                self.state = "unavailable"
                core.abort_all(outcome.message)
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
        core = self._engine()
        if isinstance(msg, wire.Generate):
            core.add(identity, msg)
        elif isinstance(msg, wire.Abort) and core.abort(identity, msg.request_ids):
            self._update_snapshot()

    def _update_snapshot(self) -> None:
        counts = self._engine().counts()
        in_flight, busy = self.link.in_flight()
        self.snapshot = {
            "num_total_blocks": counts["num_total_blocks"],
            "num_free_blocks": counts["num_free_blocks"],
            "num_running": counts["num_running"],
            "num_waiting": counts["num_waiting"],
            "max_batches_in_flight": self.link.max_in_flight,
            "batches_in_flight": busy,
            "steps": self.link.steps_sent,
            "empty_steps": self.link.empty_steps_sent,
            "micro_batches": self.micro_batches,
            "max_micro_batches": self.max_micro_batches,
            "round_trip_ms": round(self.link.round_trip_ms, 3),
            "micro_batch_sizes": counts["micro_batch_sizes"],
            "generation": self.link.generation,
            "recoveries": self.recoveries,
            "last_recovery_s": round(self.last_recovery_s, 3),
            "coordinator_parameters": self.coordinator_parameters,
        }
