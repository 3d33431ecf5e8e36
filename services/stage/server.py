"""The stage process: registers with the coordinator, then runs steps from the chain.

The main thread owns the activation ROUTER (steps arrive here), the DEALER to
the next stage and the control DEALER to the coordinator (register, configure
and, on the last stage, step results). A heartbeat thread with its own DEALER
keeps telling the coordinator the process is alive while a long step computes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from services.stage.layers import local_partition, parse_layers
from services.stage.metrics import StageMetrics
from services.stage.output_waiter import OutputWaiter
from services.stage.plan_validation import (
    PlanLimits,
    PlanRefused,
    check_plan,
    check_tensors,
    check_tokens,
    max_activation_elements,
    plan_limits,
)
from services.stage.settings import StageSettings
from services.stage.token_ring import RingError, TokenRing
from services.stage.worker import StageWorker
from shared import codec, curve, wire
from shared.dropped import drop, export_zeros
from shared.engine_settings import (
    EngineSettings,
    build_vllm_config,
    config_dtype,
    model_num_layers,
)
from shared.message_limits import activation_max_bytes
from shared.metrics_endpoint import metrics_url, serve_metrics
from shared.platform_defaults import detect_platform, select_device, stage_kv_cache_gb
from shared.settings import TransportSettings
from shared.sockets import make_socket
from shared.step_phases import observe, timed
from shared.tensor_frames import HostStaging, frames_to_tensors, tensors_to_frames
from shared.vllm_bridge.grammar_codec import grammar_output_from_mask
from shared.vllm_bridge.kv_codec import decode_kv, encode_kv
from shared.vllm_bridge.step_codec import (
    result_from_runner_output,
    resumed_from_plan,
    scheduler_output_from_plan,
)

log = logging.getLogger("layerbus.stage")

REGISTER_RETRY_S = 3.0


class StageServer:
    """Runs one layer slice; all methods run on the stage's main thread."""

    def __init__(
        self, stage: StageSettings, engine: EngineSettings, transport: TransportSettings
    ) -> None:
        self.stage = stage
        self.engine = engine
        self.transport = transport
        # Security first: a stage that may not start must not load a model first.
        self.keys = curve.ServiceKeys.load(transport.secret_key, transport.coordinator_key, True)
        curve.check_bind(stage.bind, self.keys.enabled, transport.insecure, "stage (--bind)")
        # Before loading the model: a port setting that cannot work fails at once.
        metrics_port = serve_metrics(transport.metrics_port, transport.metrics_host, "stage")
        model = engine.resolved_model()
        self.num_layers = model_num_layers(model)
        self.start, self.end = parse_layers(stage.layers, self.num_layers)
        self.name = stage.name or f"stage-{self.start}-{self.end}"
        if self.keys.enabled and not stage.name:
            # With CURVE the coordinator admits a stage only under its key's name.
            self.name = os.path.basename(transport.secret_key).removesuffix(".key_secret")
        part = local_partition(self.start, self.end, self.num_layers)
        log.info("%s: loading layers [%d, %d) of %s", self.name, self.start, self.end, model)
        started = time.monotonic()
        select_device(stage.device)
        # StageWorker drives vLLM's V1 GPU model runner (the CPU one derives from it);
        # V2, vLLM's CUDA default, sizes its PP receive buffer before our rank is set.
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        platform = detect_platform()
        choice = engine.platform_choice(
            stage_kv_cache_gb(platform, stage.kv_cache_gb), stage.gpu_memory_utilization, platform
        )
        log.info("%s: %s, dtype %s", self.name, platform, choice.dtype)
        # A stage holding the whole model on a GPU runs vLLM's async model runner, as
        # `vllm serve` does; in a chain the runners stay synchronous and the token ring
        # feeds the first stage (vLLM's CPU platform turns async scheduling off itself).
        whole = part.size == 1 and platform == "cuda" and stage.async_runner
        config = build_vllm_config(engine, pipeline_size=1, choice=choice, async_scheduling=whole)
        self.worker = StageWorker(config, part, stage.threads)
        log.info("%s: layers loaded in %.1f s", self.name, time.monotonic() - started)
        self.ctx = zmq.Context()
        # Before configure only the coordinator may send steps; then also the upstream hop.
        self.upstream = (self.keys.coordinator or b"").decode()
        self.allow = curve.AllowList({self.keys.coordinator or b""}, label="stage-data")
        self.auth = curve.start_authenticator(self.ctx, self.allow) if self.keys.enabled else None
        sched = config.scheduler_config
        self.data = make_socket(
            self.ctx,
            zmq.ROUTER,
            transport,
            curve=self.keys.server(),
            max_message_bytes=activation_max_bytes(
                sched.max_num_seqs,
                config.model_config.max_model_len,
                sched.max_num_batched_tokens,
                config.model_config.get_hidden_size(),
                config.model_config.dtype.itemsize,
            ),
        )
        self.data.bind(stage.bind)
        self.limits: PlanLimits | None = None
        self.redialer: curve.Redialer | None = None
        self.metrics = StageMetrics(self.name, self.start, self.end)
        export_zeros("stage-control", "stage-data")
        bound = self.data.getsockopt_string(zmq.LAST_ENDPOINT)
        self.address = stage.advertise or bound
        self.metrics_url = metrics_url(
            metrics_port, transport.metrics_host, self.address, transport.metrics_advertise
        )
        self.dtype = config_dtype(config)
        self.max_model_len = config.model_config.max_model_len
        self.control = make_socket(
            self.ctx,
            zmq.DEALER,
            transport,
            identity=self.name.encode(),
            curve=self.keys.client_of(self.keys.coordinator),
        )
        self.control.connect(stage.coordinator)
        self.next: zmq.Socket | None = None  # type: ignore[type-arg]
        self.configured = False  # KV cache allocated (kept across chains)
        self.num_blocks = 0
        self.in_chain = False  # part of the coordinator's current chain
        self.generation = 0
        self.steps = 0
        self.busy_s = 0.0
        self.recent_step_ms = 0.0
        self.leaving = ""
        self.stopping = threading.Event()
        self.last_heard = time.monotonic()
        self.pending_sends: list[zmq.MessageTracker] = []
        self.next_address = ""
        self.next_key = ""
        self.staging = HostStaging()
        # The token ring: plans waiting at the first stage, the last stage's socket to it.
        self.ring: TokenRing[tuple[wire.Step, list[Any], Any, float]] = TokenRing()
        self.ring_fed = False
        self.ring_out: zmq.Socket | None = None  # type: ignore[type-arg]
        self.ring_upstream = ""
        self.ring_address = ""
        self.ring_key = ""
        # Steps sampled by the async runner whose tokens are still on their way to the host.
        self.outputs: OutputWaiter[wire.Step] | None = None
        if self.worker.async_output:
            self.outputs = OutputWaiter(self.ctx, StageWorker.resolve_output)

    # ------------------------------------------------------------ lifecycle

    def register_message(self) -> wire.Register:
        layers_loaded, other_parameters = self.worker.loaded_summary()
        return wire.Register(
            name=self.name,
            layer_start=self.start,
            layer_end=self.end,
            num_layers=self.num_layers,
            data_address=self.address,
            kv_cache_specs=encode_kv(self.worker.kv_cache_spec()),
            available_kv_bytes=self.worker.available_kv_bytes(),
            kv_cache_layouts=self.worker.kv_cache_layouts(),
            engine_fingerprint=self.engine.fingerprint(),
            pid=os.getpid(),
            layers_loaded=layers_loaded,
            other_parameters=other_parameters,
            metrics=self.metrics_url,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
        )

    def serve_forever(self) -> None:
        register = self.register_message()
        log.info(
            "%s: activations on %s; registering with %s",
            self.name,
            self.address,
            self.stage.coordinator,
        )
        last_register = 0.0
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        poller = zmq.Poller()
        poller.register(self.data, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        if self.outputs is not None:
            poller.register(self.outputs.wake, zmq.POLLIN)
        interval = self.transport.heartbeat_interval_s
        while True:
            if self.leaving:
                self._leave()
                return
            now = time.monotonic()
            silent = now - self.last_heard > interval * self.transport.heartbeat_misses
            if (not self.configured or silent) and now - last_register > REGISTER_RETRY_S:
                if self.configured:
                    # Keep serving: a coordinator that merely paused ignores this,
                    # a restarted one learns about us again.
                    log.warning("%s: coordinator silent; announcing again", self.name)
                self.control.send_multipart(codec.encode(register))
                last_register = now
            events = dict(poller.poll(timeout=int(interval * 1000)))
            if self.redialer is not None:
                self.redialer.tick(time.monotonic())
            if self.control in events and self._on_control(self.control.recv_multipart(copy=False)):
                return
            if self.data in events:
                self._on_data(self.data.recv_multipart(copy=False))
            if self.outputs is not None and self.outputs.wake in events:
                self._send_resolved()

    def _heartbeats(self) -> None:
        """Heartbeat thread: its own socket, so a long step never looks like a death."""
        sock = make_socket(
            self.ctx, zmq.DEALER, self.transport, curve=self.keys.client_of(self.keys.coordinator)
        )
        sock.connect(self.stage.coordinator)
        seq = 0
        try:
            while not self.stopping.wait(self.transport.heartbeat_interval_s):
                seq += 1
                beat = wire.Heartbeat(
                    name=self.name,
                    seq=seq,
                    pid=os.getpid(),
                    steps=self.steps,
                    busy_s=round(self.busy_s, 3),
                    recent_step_ms=round(self.recent_step_ms, 3),
                    num_requests=self.worker.num_requests(),
                    generation=self.generation,
                )
                # The coordinator may be away; the next beat tries again.
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(codec.encode(beat), zmq.NOBLOCK)
        finally:
            sock.close(linger=0)

    def request_leave(self, reason: str) -> None:
        """Signal handler: finish the current step, tell the coordinator, exit."""
        self.leaving = reason

    def _leave(self) -> None:
        log.info("%s: leaving (%s); the coordinator hands its work over", self.name, self.leaving)
        msg = wire.Leave(name=self.name, pid=os.getpid(), reason=self.leaving)
        with contextlib.suppress(zmq.ZMQError):
            self.control.send_multipart(codec.encode(msg), zmq.NOBLOCK)

    def close(self) -> None:
        self.stopping.set()
        if self.redialer is not None:
            self.redialer.close()
        if self.outputs is not None:
            self.outputs.close()
        for sock in (self.data, self.control, self.next, self.ring_out):
            if sock is not None:
                sock.close()
        if self.auth is not None:
            self.auth.stop()
        self.metrics.close()
        self.ctx.term()

    # ------------------------------------------------------------ control

    def _on_control(self, frames: list[Any]) -> bool:
        """Handle one control message; True means shut down."""
        try:
            msg = codec.decode(frames)
        except wire.WireError as err:
            drop("stage-control", "malformed", str(err))
            return False
        self.last_heard = time.monotonic()
        if isinstance(msg, wire.Configure):
            self._configure(msg)
        elif isinstance(msg, wire.Reset):
            self._reset(msg)
        elif isinstance(msg, wire.Shutdown):
            log.info("%s: shutdown requested: %s", self.name, msg.reason)
            return True
        return False

    def _configure(self, msg: wire.Configure) -> None:
        error = ""
        num_blocks = 0
        try:
            config = decode_kv(msg.kv_cache_config)
            num_blocks = int(config.num_blocks)
            if not self.configured:
                self.worker.configure(config, msg.kv_cache_layout)
                self.num_blocks = num_blocks
            elif num_blocks != self.num_blocks:
                raise ValueError(
                    f"this stage already holds a KV cache of {self.num_blocks} blocks and "
                    f"cannot take {num_blocks}; restart it"
                )
            dropped = self.worker.drop_requests(keep=set(msg.live_request_ids))
            if dropped:
                log.info("%s: dropped %d requests of an earlier chain", self.name, dropped)
            self.generation = msg.generation
            self.in_chain = True
            self.limits = plan_limits(self.worker.vllm_config, config)
            if self.keys.enabled:
                coordinator = self.keys.coordinator or b""
                self.upstream = msg.upstream_key or coordinator.decode()
                self.ring_upstream = msg.ring_upstream_key
                allowed = {coordinator, self.upstream.encode()}
                if msg.ring_upstream_key:
                    allowed.add(msg.ring_upstream_key.encode())
                self.allow.set(allowed)
            if self.redialer is not None:
                self.redialer.close()
                self.redialer = None
            self._open_next(msg.next_address, msg.next_key)
            self._open_ring(
                msg.generation,
                fed=self.worker.is_first and not self.worker.is_last,
                address=msg.ring_address,
                key=msg.ring_next_key,
            )
            self.configured = True
            log.info(
                "%s: stage %d of %d, %d KV blocks, next hop %s",
                self.name,
                msg.stage_index + 1,
                msg.num_stages,
                num_blocks,
                msg.next_address or "coordinator",
            )
        except Exception as err:  # reported to the coordinator, which stops start-up
            log.exception("%s: configure failed", self.name)
            error = f"{type(err).__name__}: {err}"
        reply = wire.Configured(name=self.name, num_blocks=num_blocks, error=error)
        self.control.send_multipart(codec.encode(reply))

    def _open_ring(self, generation: int, fed: bool, address: str, key: str) -> None:
        """The token ring of a chain: does this stage wait for tokens, where does it send them.

        Plans waiting for tokens of the previous chain are dropped: their requests
        resume in the new one (or elsewhere, for a stage reset to standby).
        """
        self.ring_fed = fed
        dropped = self.ring.reset(generation)
        if dropped:
            log.info("%s: dropped %d plans of an earlier chain", self.name, len(dropped))
        if self.ring_out is not None:
            self.ring_out.close(linger=0)
            self.ring_out = None
        # Dialled at the first send: the first stage is configured after this one
        # (last first), and with CURVE it admits this stage only from then on.
        self.ring_address, self.ring_key = address, key

    def _send_ring(self, msg: wire.Tokens) -> None:
        """Send one step's sampled tokens round the ring to the first stage."""
        if self.ring_out is None:
            key = self.keys.client_of(self.ring_key.encode()) if self.keys.enabled else None
            self.ring_out = make_socket(self.ctx, zmq.DEALER, self.transport, curve=key)
            self.ring_out.connect(self.ring_address)
        try:
            self.ring_out.send_multipart(codec.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            # Thousands of messages queued: the first stage is gone, and the
            # coordinator rebuilds the chain when its heartbeats stop.
            drop("stage-data", "ring-full", f"ring tokens of step {msg.step_id}")

    def _open_next(self, address: str, key: str) -> None:
        """(Re)connect the DEALER to the next hop; what was queued for the old one is dropped."""
        if self.redialer is not None:
            self.redialer.close()
            self.redialer = None
        if self.next is not None:
            self.next.close(linger=0)
            self.next = None
        self.pending_sends.clear()
        self.next_address, self.next_key = address, key
        if not address:
            return
        nxt = self.keys.client_of(key.encode()) if self.keys.enabled else None
        self.next = make_socket(self.ctx, zmq.DEALER, self.transport, curve=nxt)
        self.next.connect(address)
        if nxt is not None:
            self.redialer = curve.Redialer(self.next, address)

    def _wait_for_sends(self) -> None:
        """The previous activations must be on the wire before the runner reuses memory.

        A next hop that takes nothing for several heartbeat intervals is gone (the
        coordinator will rebuild the chain): what is queued for it is dropped and the
        hop dialled again, so this loop never blocks on a dead peer.
        """
        patience = self.transport.heartbeat_interval_s * self.transport.heartbeat_misses
        deadline = time.monotonic() + patience
        for sent in self.pending_sends:
            try:
                sent.wait(timeout=max(0.0, deadline - time.monotonic()))
            except zmq.NotDone:
                log.warning(
                    "%s: next hop %s took no activations for %.0f s; dialling again",
                    self.name,
                    self.next_address,
                    patience,
                )
                self._open_next(self.next_address, self.next_key)
                break
        self.pending_sends.clear()

    def _reset(self, msg: wire.Reset) -> None:
        """Leave the chain: forget every request and the next hop, wait as a standby."""
        dropped = self.worker.drop_requests(keep=set()) if self.configured else 0
        self._open_next("", "")
        self._open_ring(msg.generation, fed=False, address="", key="")
        self.in_chain = False
        self.generation = msg.generation
        log.info("%s: standby (dropped %d requests)", self.name, dropped)

    # ------------------------------------------------------------ data

    def _fail_step(self, step_id: int, error: str) -> None:
        """Tell the coordinator this step failed, so its requests end instead of hanging."""
        failed = wire.StepResult(
            step_id=step_id,
            req_ids=[],
            sampled_token_ids=[],
            error=f"{self.name}: {error}",
            generation=self.generation,
        )
        self.control.send_multipart(codec.encode(failed))

    def _on_data(self, frames: list[Any]) -> None:
        # frames[0] is the ROUTER identity of the sender.
        arrived = time.perf_counter()
        try:
            header = codec.decode(frames[1:3])
            if not isinstance(header, wire.Step | wire.Tokens):
                raise wire.WireError(f"expected Step or Tokens, got {type(header).__name__}")
        except wire.WireError as err:
            drop("stage-data", "malformed", str(err))
            return
        if isinstance(header, wire.Tokens):
            self._on_tokens(header, frames)
            return
        if self.keys.enabled and curve.user_id(frames[-1]) != self.upstream:
            drop("stage-data", "unauthorized", "a step from a peer that is not the upstream hop")
            return
        if not self.in_chain or header.generation != self.generation or self.limits is None:
            # A step of an earlier chain (or for a standby): its requests were resumed
            # elsewhere, so it is dropped, never run.
            drop(
                "stage-data",
                "stale",
                f"step {header.step_id} of generation {header.generation} "
                f"(this stage: {self.generation}, in chain: {self.in_chain})",
            )
            return
        try:
            check_tensors(header.tensors, self.limits)
            check_plan(header.plan, self.limits)
            elements = max_activation_elements(self.limits)
            tensors = frames_to_tensors(header.tensors, frames[3:], elements)
        except (PlanRefused, wire.WireError) as err:
            drop("stage-data", "invalid", f"step {header.step_id}: {err}")
            self._fail_step(header.step_id, f"refused an invalid step: {err}")
            return
        observe("stage", "decode", time.perf_counter() - arrived)
        if self.ring_fed:
            # The first stage of a chain of two or more: the plan may wait here for
            # the tokens the last stage has yet to send round the ring.
            self.ring.push(header.plan, (header, frames, tensors, time.perf_counter()))
            self._run_ready()
            return
        self._run_step(header, frames, tensors)

    def _on_tokens(self, msg: wire.Tokens, frames: list[Any]) -> None:
        """Sampled tokens from the last stage (or a failed step named by the coordinator)."""
        if not self.ring_fed or self.limits is None:
            drop("stage-data", "stale", f"ring tokens of step {msg.step_id} for a stage not fed")
            return
        if self.keys.enabled:
            sender = curve.user_id(frames[-1])
            coordinator = (self.keys.coordinator or b"").decode()
            if sender != self.ring_upstream and not (msg.failed and sender == coordinator):
                drop("stage-data", "unauthorized", "ring tokens from a peer not the last stage")
                return
        try:
            check_tokens(msg, self.limits)
        except PlanRefused as err:
            drop("stage-data", "invalid", f"ring tokens of step {msg.step_id}: {err}")
            return
        if not self.ring.add_tokens(msg):
            drop(
                "stage-data",
                "stale",
                f"ring tokens of step {msg.step_id} of generation {msg.generation} "
                f"(this stage: {self.ring.generation})",
            )
            return
        self._run_ready()

    def _run_ready(self) -> None:
        """Run every waiting plan whose tokens have all arrived, oldest first."""
        while True:
            try:
                ready = self.ring.pop_ready()
            except RingError as err:  # a plan and its tokens disagree: a bug, not a peer
                log.error("%s: %s", self.name, err)
                self.metrics.ring_waiting(self.ring.waiting())
                return
            if ready is None:
                self.metrics.ring_waiting(self.ring.waiting())
                return
            _, (header, frames, tensors, queued) = ready
            observe("stage", "ring_wait", time.perf_counter() - queued)
            self._run_step(header, frames, tensors)

    def _run_step(self, header: wire.Step, frames: list[Any], tensors: Any) -> None:
        """Run one valid step on this stage's layers and pass the result on."""
        self._wait_for_sends()
        started = time.monotonic()
        try:
            scheduler_output = scheduler_output_from_plan(header.plan)
            self.worker.adopt(resumed_from_plan(header.plan))
            grammar = None
            if self.worker.is_last and header.plan.grammar is not None:
                grammar = grammar_output_from_mask(header.plan.grammar)
            out_tensors, runner_output = self.worker.run(scheduler_output, tensors or None, grammar)
        except Exception as err:  # the coordinator fails this step's requests
            log.exception("%s: step %d failed", self.name, header.step_id)
            if self.ring_fed:
                self.ring.step_failed(header.step_id)
            self._fail_step(header.step_id, f"{type(err).__name__}: {err}")
            return
        finally:
            elapsed = time.monotonic() - started
            self.steps += 1
            self.busy_s += elapsed
            self.recent_step_ms = 0.8 * self.recent_step_ms + 0.2 * elapsed * 1000
            self.metrics.step(elapsed, frames[1:])
            observe("stage", "forward", elapsed)
        with timed("stage", "forward_send"):
            self._pass_on(header, out_tensors, runner_output)

    def _pass_on(self, header: wire.Step, out_tensors: Any, runner_output: Any) -> None:
        """A step's output to the next stage, or its sampled tokens out of the last."""
        if self.worker.is_last:
            if self.outputs is not None:
                # Its tokens are still being copied to the host; the next step may
                # start meanwhile. The output thread wakes the loop to send it.
                self.outputs.put(header, runner_output)
                return
            self._send_result(header, runner_output)
            return
        if self.next is None:
            log.error("%s: not the last stage but has no next hop", self.name)
            return
        # Steps with no scheduled tokens still travel on: later stages must
        # see their finished/preempted requests.
        metas, buffers = tensors_to_frames(out_tensors or {}, self.staging)
        step = wire.Step(
            step_id=header.step_id, plan=header.plan, tensors=metas, generation=header.generation
        )
        sent_at, out = time.monotonic(), [*codec.encode(step), *buffers]
        tracker = self.next.send_multipart(out, copy=False, track=True)
        self.metrics.sent(out, tracker, sent_at)
        if tracker is not None:
            self.pending_sends.append(tracker)

    def _send_resolved(self) -> None:
        """Send the results of async-runner steps whose tokens have reached the host."""
        assert self.outputs is not None
        for header, output, error in self.outputs.take():
            if error is not None:
                log.error("%s: step %d failed: %s", self.name, header.step_id, error)
                self._fail_step(header.step_id, f"{type(error).__name__}: {error}")
                continue
            self._send_result(header, output)

    def _send_result(self, header: wire.Step, runner_output: Any) -> None:
        """Last stage: the step's sampled tokens round the ring and to the coordinator."""
        result = result_from_runner_output(header.step_id, runner_output)
        result.generation = header.generation
        if self.ring_address:
            # Round the ring first: the first stage is waiting for these tokens;
            # the coordinator only streams them and plans further ahead.
            tokens = wire.Tokens(
                step_id=header.step_id,
                generation=header.generation,
                req_ids=result.req_ids,
                sampled_token_ids=result.sampled_token_ids,
            )
            self._send_ring(tokens)
        sent_at, out = time.monotonic(), codec.encode(result)
        self.control.send_multipart(out)
        self.metrics.sent(out, None, sent_at)


def run(stage: StageSettings, engine: EngineSettings, transport: TransportSettings) -> None:
    """Entry point of `layerbus stage`."""
    server = StageServer(stage, engine, transport)
    signal.signal(signal.SIGTERM, lambda *_: server.request_leave("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: server.request_leave("SIGINT"))
    try:
        server.serve_forever()
    finally:
        server.close()
