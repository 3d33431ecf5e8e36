"""The stage process: loads its layers, wires the pieces, runs the main loop.

The main thread owns the activation ROUTER (steps and ring tokens arrive
here, hop.py), the DEALERs to the next stage and round the token ring
(links.py) and the control DEALER to the coordinator (register, Configure,
Reset, Leave: control.py; step results from the last stage). A heartbeat
thread with its own DEALER keeps telling the coordinator the process is alive
while a long step computes (heartbeat.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import zmq

from services.stage.compile_cache import range_cache_env
from services.stage.control import ControlPlane, StageIdentity
from services.stage.cpu_wait import CpuWait
from services.stage.heartbeat import HeartbeatThread, heartbeat_message
from services.stage.hop import ActivationHop
from services.stage.layers import local_partition, parse_layers
from services.stage.links import NextHop, RingLink
from services.stage.membership import Membership
from services.stage.metrics import StageMetrics
from services.stage.offer import place_this_stage
from services.stage.reload import reload_process, reloaded
from services.stage.settings import StageSettings
from services.stage.step_stats import StepStats
from services.stage.worker import StageWorker
from shared import curve, wire
from shared.dropped import export_zeros
from shared.engine_settings import (
    EngineSettings,
    build_vllm_config,
    config_dtype,
    model_num_layers,
)
from shared.message_limits import activation_max_bytes
from shared.metrics_endpoint import metrics_url, serve_metrics
from shared.platform_defaults import detect_platform, select_device, stage_kv_cache_gb
from shared.process_age import age_note
from shared.prompt_exit import exit_process
from shared.settings import TransportSettings
from shared.sockets import make_socket
from shared.wakeup import Wakeup

log = logging.getLogger("layerbus.stage")


class StageServer:
    """One stage process: its keys, model, sockets and the loop that feeds them; main thread."""

    def __init__(
        self,
        stage: StageSettings,
        engine: EngineSettings,
        transport: TransportSettings,
        placed: bool = False,
        offer: wire.Offer | None = None,
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
        num_layers = model_num_layers(model)
        start, end = parse_layers(stage.layers, num_layers)
        self.name = stage.name or f"stage-{start}-{end}"
        if self.keys.enabled and not stage.name:
            # With CURVE the coordinator admits a stage only under its key's name.
            self.name = os.path.basename(transport.secret_key).removesuffix(".key_secret")
        part = local_partition(start, end, num_layers)
        log.info(
            "%s: loading layers [%d, %d) of %s%s", self.name, start, end, model, age_note()
        )
        started = time.monotonic()
        select_device(stage.device)
        # StageWorker drives vLLM's V1 GPU model runner (the CPU one derives from it);
        # V2, vLLM's CUDA default, sizes its PP receive buffer before our rank is set.
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        platform = detect_platform()
        choice = engine.platform_choice(
            stage_kv_cache_gb(platform, stage.kv_cache_gb), stage.gpu_memory_utilization, platform
        )
        log.info("%s: %s, dtype %s, %s", self.name, platform, choice.dtype, choice.describe())
        if platform == "cuda":
            os.environ.update(range_cache_env(os.environ, start, end, num_layers))
            log.info("%s: vLLM cache %s", self.name, os.environ["VLLM_CACHE_ROOT"])
        # A stage holding the whole model on a GPU runs vLLM's async model runner, as
        # `vllm serve` does; in a chain the runners stay synchronous and the token ring
        # feeds the first stage (vLLM's CPU platform turns async scheduling off itself).
        whole = part.size == 1 and platform == "cuda" and stage.async_runner
        config = build_vllm_config(engine, pipeline_size=1, choice=choice, async_scheduling=whole)
        self.worker = StageWorker(config, part, stage.threads)
        log.info("%s: layers loaded in %.1f s", self.name, time.monotonic() - started)
        self.ctx = zmq.Context()
        # Before configure only the coordinator may send steps; then also the upstream hop.
        self.chain = Membership(self.keys.coordinator, self.keys.enabled)
        allow = curve.AllowList({self.keys.coordinator or b""}, label="stage-data")
        self.auth = curve.start_authenticator(self.ctx, allow) if self.keys.enabled else None
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
        self.metrics = StageMetrics(self.name, start, end)
        export_zeros("stage-control", "stage-data")
        bound = self.data.getsockopt_string(zmq.LAST_ENDPOINT)
        self.address = stage.advertise or bound
        identity = StageIdentity(
            name=self.name,
            start=start,
            end=end,
            num_layers=num_layers,
            address=self.address,
            fingerprint=engine.fingerprint(),
            metrics_url=metrics_url(
                metrics_port, transport.metrics_host, self.address, transport.metrics_advertise
            ),
            dtype=config_dtype(config),
            max_model_len=config.model_config.max_model_len,
            placed=placed,
            offer=offer,
        )
        self.control = make_socket(
            self.ctx,
            zmq.DEALER,
            transport,
            identity=self.name.encode(),
            curve=self.keys.client_of(self.keys.coordinator),
        )
        self.control.connect(stage.coordinator)
        self.stats = StepStats()
        # The async runner's results leave from its output thread, on their own socket.
        results = None
        if self.worker.async_output:
            results = make_socket(
                self.ctx,
                zmq.DEALER,
                transport,
                identity=f"{self.name}#results".encode(),
                curve=self.keys.client_of(self.keys.coordinator),
            )
            results.connect(stage.coordinator)
        self.hop = ActivationHop(
            self.name,
            self.worker,
            self.chain,
            self.control,
            NextHop(self.ctx, transport, self.keys, self.name),
            RingLink(self.ctx, transport, self.keys),
            self.metrics,
            self.stats,
            results,
        )
        self.control_plane = ControlPlane(
            identity,
            self.worker,
            self.chain,
            self.hop,
            self.control,
            allow,
            transport.heartbeat_interval_s,
            transport.heartbeat_misses,
        )
        self.wakeup = Wakeup()  # a signal wakes the main loop's poll (request_leave)
        cpu_wait = CpuWait()  # this (the main) thread's wait for a CPU
        self.heartbeats = HeartbeatThread(
            self.ctx,
            transport,
            stage.coordinator,
            self.keys.client_of(self.keys.coordinator),
            lambda seq: heartbeat_message(
                self.name,
                seq,
                self.stats,
                self.worker.num_requests(),
                self.chain.generation,
                cpu_wait.seconds(),
            ),
        )

    def serve_forever(self) -> None:
        """The main loop: register, then control messages, steps and async results."""
        self.control_plane.begin()
        log.info(
            "%s: activations on %s; registering with %s",
            self.name,
            self.address,
            self.stage.coordinator,
        )
        self.heartbeats.start()
        poller = zmq.Poller()
        poller.register(self.data, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        self.wakeup.register(poller)
        interval = self.transport.heartbeat_interval_s
        while True:
            if self.control_plane.leaving:
                self.control_plane.leave()
                return
            self.control_plane.announce(time.monotonic())
            events = dict(poller.poll(timeout=int(interval * 1000)))
            self.hop.next_hop.tick(time.monotonic())
            if self.control in events and self.control_plane.on_control(
                self.control.recv_multipart(copy=False)
            ):
                return
            if self.data in events:
                self.hop.on_data(self.data.recv_multipart(copy=False))

    def request_leave(self, reason: str) -> None:
        """Signal handler: finish the current step, tell the coordinator, exit."""
        self.control_plane.request_leave(reason)
        self.wakeup.wake()

    def close(self) -> None:
        self.heartbeats.stop()
        self.hop.close()
        self.data.close()
        self.control.close()
        if self.auth is not None:
            self.auth.stop()
        self.metrics.close()
        self.ctx.term()
        self.wakeup.close()


def run(stage: StageSettings, engine: EngineSettings, transport: TransportSettings) -> None:
    """Entry point of `layerbus stage`; a placed stage moved by a re-plan reloads itself."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    offering = None
    placed = not stage.layers or reloaded()
    if placed:
        given = place_this_stage(stage, engine, transport, stopping)
        if given is None:
            log.info("stopped before the coordinator assigned a layer range")
            return
        stage, offering = given
    try:
        offer = offering.offer if offering is not None else None
        server = StageServer(stage, engine, transport, placed, offer)
    finally:
        if offering is not None:
            offering.close()
    signal.signal(signal.SIGTERM, lambda *_: server.request_leave("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: server.request_leave("SIGINT"))
    if stopping.is_set():
        server.request_leave("stopped while loading")
    try:
        server.serve_forever()
    finally:
        server.close()
    if server.control_plane.reload_to:
        reload_process(server.control_plane.reload_to)
    # The leave is done (Leave sent, sockets closed); skip the interpreter's teardown.
    exit_process(0)
