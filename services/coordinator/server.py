"""The coordinator process: ROUTER I/O thread, registry, and the engine thread.

The I/O thread (this module's main loop) owns the ROUTER that gateways and
stages talk to, and an inproc PULL through which the engine thread hands it
outgoing messages (outbox.py). It never blocks on the engine. Stage membership
is decided in membership.py, the /status reply built in status.py.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zmq

from services.coordinator import metrics, security
from services.coordinator.authorization import Principal, Unauthorized, step_result_refusal
from services.coordinator.engine import EngineHost
from services.coordinator.membership import Membership
from services.coordinator.outbox import Outbox
from services.coordinator.pipeline import PipelineLink
from services.coordinator.placing import placing_for
from services.coordinator.registry import Registry, StageRecord
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.startup import startup_error
from services.coordinator.status import Served, status_reply
from services.coordinator.validation import (
    RefusedGenerate,
    generate_error,
    invalid_answer,
    not_ready_answer,
    refused_generate,
)
from shared import codec, curve, wire
from shared.dropped import drop, export_zeros
from shared.engine_settings import EngineSettings, config_dtype, model_num_layers
from shared.metrics_endpoint import metrics_url, serve_metrics
from shared.prompt_exit import exit_process
from shared.settings import TransportSettings
from shared.sockets import make_socket
from shared.wakeup import Wakeup

log = logging.getLogger("layerbus.coordinator")

# A message handler: (ROUTER identity, message, its sender, monotonic time of receipt).
Handler = Callable[[bytes, Any, Principal, float], None]

# The CoordinatorServer method (or its membership's) that handles each message type
# (who may send which: authorization.py). A Generate the typed decode refused is
# answered like a Generate.
HANDLERS: dict[type, str] = {
    wire.Generate: "_on_generate",
    RefusedGenerate: "_on_generate",
    wire.Abort: "_on_abort",
    wire.StatusQuery: "_on_status_query",
    wire.StepResult: "_on_step_result",
    wire.Register: "membership.on_register",
    wire.Heartbeat: "membership.on_heartbeat",
    wire.Configured: "membership.on_configured",
    wire.Leave: "membership.on_leave",
    wire.Offer: "placing.on_offer",
}


class CoordinatorServer:
    """The coordinator: its ROUTER and I/O loop (main thread); serve_forever() until stop()."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: EngineSettings,
        transport: TransportSettings,
    ) -> None:
        self.settings = settings
        self.engine_settings = engine
        self.transport = transport
        self.model_path = engine.resolved_model()
        self.model_name = settings.served_model_name or Path(self.model_path).name
        self.num_layers = model_num_layers(self.model_path)
        self.registry = Registry(self.num_layers, engine.fingerprint())
        self.ctx = zmq.Context()
        self.security = security.CoordinatorSecurity(settings, engine, transport, self.ctx)
        self.router = make_socket(
            self.ctx, zmq.ROUTER, transport, curve=self.security.keys.server()
        )
        self.router.bind(settings.bind)
        port = serve_metrics(transport.metrics_port, transport.metrics_host, "coordinator")
        self.metrics_url = metrics_url(
            port, transport.metrics_host, settings.bind, transport.metrics_advertise
        )
        metrics.register(lambda: metrics.view_of(self))
        export_zeros("coordinator")
        self.outbox = Outbox(self.ctx)
        self.link = PipelineLink(self.ctx, transport)
        self.link.curve_for = self.security.client_of_stage
        self.membership = Membership(self.registry, self.link, self._send, self._start_engine)
        self.placing = placing_for(
            settings, engine, self.model_path, self.registry, self.link, self._send
        )
        self.membership.placing = self.placing
        self.host: EngineHost | None = None
        self.engine_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wakeup = Wakeup()  # stop() (a signal handler) wakes the loop's poll
        self.detail = "waiting for stages"
        self.exit_code = 0
        # Gateways see a new incarnation after a restart and fail what they had sent to
        # the old one (each Generate is acknowledged with the incarnation: wire.Accepted).
        self.incarnation = uuid.uuid4().hex[:12]
        self._handlers: dict[type, Handler] = {
            kind: operator.attrgetter(path)(self) for kind, path in HANDLERS.items()
        }

    # ------------------------------------------------------------ helpers

    def _send_from_engine(self, identity: bytes, msg: msgspec.Struct) -> None:
        """Called on the engine thread: queue a message for the I/O thread to send."""
        if isinstance(msg, wire.Configure):
            msg = self.security.with_chain_keys(msg, [r.name for r in self.link.chain])
        self.outbox.send(identity, msg)

    def _send(self, identity: bytes, msg: msgspec.Struct) -> None:
        try:
            self.router.send_multipart([identity, *codec.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError as err:  # EHOSTUNREACH: the peer is gone; EAGAIN: it is full
            log.warning("could not send %s to %r: %s", type(msg).__name__, identity, err)

    def status(self, nonce: int) -> wire.Status:
        """The Status reply to a StatusQuery (built by services/coordinator/status.py)."""
        served = Served(self.model_name, self.num_layers, self.incarnation, self.metrics_url)
        reply = status_reply(
            nonce,
            served,
            self.registry.stages.values(),
            self.host,
            self.link,
            waiting=self.placing.detail(self.detail),
            dtype=self.dtype(),
            max_model_len=self.engine_settings.max_model_len,
            now=time.monotonic(),
        )
        return self.placing.annotate(reply)

    def dtype(self) -> str:
        """What the engine runs; before it starts, what the settings will give."""
        if self.host is not None and self.host.vllm_config is not None:
            return config_dtype(self.host.vllm_config)
        return self.engine_settings.platform_choice().dtype

    # ------------------------------------------------------------ main loop

    def serve_forever(self) -> None:
        log.info(
            "coordinator on %s; waiting for stages covering %d layers",
            self.settings.bind,
            self.num_layers,
        )
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.outbox.pull, zmq.POLLIN)
        self._wakeup.register(poller)
        interval = self.transport.heartbeat_interval_s
        last_beat = last_progress = 0.0
        while not self._stop.is_set():
            events = dict(poller.poll(timeout=int(interval * 1000 / 2)))
            if self.outbox.pull in events:
                self.outbox.forward(self.router)
            if self.router in events:
                for _ in range(1000):
                    try:
                        received = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_message(received)
            now = time.monotonic()
            if now - last_beat >= interval:
                last_beat = now
                self._heartbeat(now)
            host = self.host
            if host is not None and host.error is not None and host.state == "starting":
                if not host.stage_failed:
                    log.error("stopping: the engine could not start: %s", host.error)
                    self.exit_code = 1
                    return
                self._start_again(host)
            if self.link.wants_chain:
                self.membership.offer_chain()
            if not self.membership.started and now - last_progress >= 5:
                last_progress = now
                self.membership.maybe_start(announce=True)

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.wake()
        if self.host is not None:
            self.host.stopping.set()

    def close(self) -> None:
        # Stages keep their weights and wait for the coordinator to come back.
        # Steps in flight will never be answered (this thread no longer reads), so fail
        # them: an engine thread waiting on one wakes, sees `stopping` and ends.
        self.link.break_chain("the coordinator is stopping")
        if self.engine_thread is not None:
            self.engine_thread.join(timeout=5)
            if self.engine_thread.is_alive():
                log.warning("the engine thread did not stop within 5 s; exiting without it")
        self.link.close()
        self.router.close()
        self.outbox.close()
        self.security.close()
        # destroy, not term: a socket an engine thread still holds must not block the exit.
        self.ctx.destroy(linger=0)
        self._wakeup.close()

    def _heartbeat(self, now: float) -> None:
        age = self.link.oldest_step_age(now)
        if age > self.settings.step_timeout_s:
            log.error("a step got no result for %.0f s; failing requests in flight", age)
            # The stages are alive (heartbeats), so later requests may proceed.
            self.link.fail_all(
                f"a pipeline step got no result within {self.settings.step_timeout_s:.0f} s "
                "(LAYERBUS_STEP_TIMEOUT_S)",
                broken=False,
            )
        timeout = self.transport.heartbeat_interval_s * self.transport.heartbeat_misses
        self.membership.expire(now, timeout)
        self.membership.beat(now)
        self.placing.tick(now, timeout)

    def _start_engine(self, chain: list[StageRecord]) -> None:
        """Live stages cover every layer: build the engine on its own thread (once)."""
        self.detail = "starting engine"
        self.link.attach(chain, self._send_from_engine)
        self.host = EngineHost(
            self.engine_settings,
            self.link,
            self._send_from_engine,
            self.settings.configure_timeout_s,
            micro_batches=self.settings.micro_batches,
            max_micro_batches=self.settings.max_micro_batches,
            recovery_timeout_s=self.settings.recovery_timeout_s,
            async_scheduling=self.settings.async_scheduling,
        )
        self.engine_thread = threading.Thread(target=self.host.run, name="engine", daemon=True)
        self.engine_thread.start()

    def _start_again(self, host: EngineHost) -> None:
        """A stage died or refused during the first configure: drop it, start without it."""
        if self.engine_thread is not None:
            self.engine_thread.join(timeout=5)
        chain, refused = list(self.link.chain), self.link.refused
        self.link.forget_chain()
        self.host, self.engine_thread = None, None
        self.detail = f"waiting for stages (the engine did not start: {host.error})"
        self.membership.start_failed(chain, refused, str(host.error))

    def _on_message(self, frames: list[Any]) -> None:
        identity = bytes(frames[0])
        msg: msgspec.Struct | RefusedGenerate
        try:
            msg = codec.decode(frames[1:])
        except wire.WireError as err:
            refused = refused_generate(frames[1:], err)
            if refused is None:
                drop("coordinator", "malformed", str(err))
                return
            msg = refused  # out of range: answered by _on_generate, never run
        try:
            who = self.security.authorizer.principal(curve.user_id(frames[-1]))
            self.security.authorizer.check(identity, who, msg)
        except Unauthorized as err:
            drop("coordinator", err.reason, str(err))
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            log.warning("unexpected %s from %r", type(msg).__name__, identity)
            return
        handler(identity, msg, who, time.monotonic())

    # ------------------------------------------------------------ handlers (I/O thread)

    def _on_step_result(
        self, identity: bytes, msg: wire.StepResult, who: Principal, now: float
    ) -> None:
        # Only the current chain's last stage delivers results (any chain stage may
        # report a failure), only for a step in flight of the current generation.
        refusal = step_result_refusal(
            None if who.local else who.name,
            bool(msg.error),
            [r.name for r in self.link.chain],
            self.link.is_in_flight(msg.step_id) and msg.generation == self.link.generation,
        )
        if refusal is not None:
            drop("coordinator", "step-result", f"step {msg.step_id}: {refusal}")
            return
        self.link.resolve(msg)

    def _engine_ready(self) -> EngineHost | None:
        host = self.host
        return host if host is not None and host.ready.is_set() and not host.error else None

    def _on_generate(
        self, identity: bytes, msg: wire.Generate | RefusedGenerate, who: Principal, now: float
    ) -> None:
        # Before any answer: the gateway learns which incarnation holds it.
        self._send(identity, wire.Accepted([msg.request_id[:256]], self.incarnation))
        host = self._engine_ready()
        if host is None:
            self._send(identity, not_ready_answer(msg.request_id, self.detail))
            return
        if isinstance(msg, RefusedGenerate):
            self._refuse(identity, msg.request_id, msg.error)
            return
        error = generate_error(msg, self.security.generate_limits(host.max_model_len))
        if error is not None:
            self._refuse(identity, msg.request_id, error)
            return
        host.commands.put((identity, msg))

    def _on_abort(self, identity: bytes, msg: wire.Abort, who: Principal, now: float) -> None:
        host = self._engine_ready()
        if host is not None:
            host.commands.put((identity, msg))

    def _on_status_query(
        self, identity: bytes, msg: wire.StatusQuery, who: Principal, now: float
    ) -> None:
        self._send(identity, self.status(msg.nonce))

    def _refuse(self, identity: bytes, request_id: str, error: str) -> None:
        """Answer a Generate the engine must not take: the request itself is at fault."""
        drop("coordinator", "invalid", f"Generate: {error}")
        self._send(identity, invalid_answer(request_id, error))


def run(
    settings: CoordinatorSettings, engine: EngineSettings, transport: TransportSettings
) -> None:
    """Entry point of `layerbus coordinator`; exits non-zero if the engine cannot start."""
    import signal

    error = startup_error(engine)
    if error is not None:
        raise SystemExit(f"layerbus coordinator: {error}")
    server = CoordinatorServer(settings, engine, transport)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.close()
    if server.exit_code:
        raise SystemExit(server.exit_code)
    exit_process(0)  # stopped: skip the interpreter's teardown of vLLM and torch
