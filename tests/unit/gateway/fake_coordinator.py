"""A scripted coordinator: a real ROUTER socket on 127.0.0.1 served by a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from shared import codec, wire
from shared.settings import TransportSettings
from shared.sockets import make_socket


@dataclass
class _Active:
    """One generation the fake is streaming."""

    identity: bytes
    request: wire.Generate
    tokens: list[int]
    sent: int = 0


@dataclass
class FakeCoordinator:
    """Answers StatusQuery and streams `reply_tokens` one token per tick to every Generate.

    Owned by the test; the socket belongs to the background thread. Knobs (set them
    before sending requests): ready, answer_status, hang (never answer Generate),
    fail_with (finish every request with this error), token_delay_s, finish_reason,
    incarnation (change it to play a restart), acknowledge (send wire.Accepted).
    """

    reply_tokens: list[int]
    max_model_len: int = 2048
    ready: bool = True
    answer_status: bool = True
    hang: bool = False
    fail_with: str | None = None
    finish_reason: str = "stop"
    token_delay_s: float = 0.0
    detail: str = ""
    incarnation: str = "fake-1"
    acknowledge: bool = True
    reply_for: Callable[[wire.Generate], list[int]] | None = None
    generates: list[wire.Generate] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    status_queries: int = 0
    address: str = ""
    _active: dict[str, _Active] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def start(self) -> FakeCoordinator:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = make_socket(
            ctx, zmq.ROUTER, TransportSettings.model_validate({"linger_ms": 0})
        )
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._run, name="fake-coordinator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------ test helpers

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Poll until predicate() holds; False after a generous timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(0.01)
        return False

    def generate_ids(self) -> list[str]:
        with self._lock:
            return [g.request_id for g in self.generates]

    def aborted_ids(self) -> set[str]:
        with self._lock:
            return set(self.aborted)

    # ------------------------------------------------------------ thread

    def _run(self) -> None:
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                wait_s = max(0.0, next_tick - time.monotonic()) if self._active else 0.02
                if poller.poll(timeout=int(min(wait_s, 0.02) * 1000)):
                    while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                        identity, *frames = sock.recv_multipart()
                        self._handle(identity, codec.decode(frames))
                if self._active and time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + self.token_delay_s
        finally:
            sock.close(linger=0)

    def _handle(self, identity: bytes, msg: object) -> None:
        if isinstance(msg, wire.StatusQuery):
            self.status_queries += 1
            if self.answer_status:
                self._send(identity, self._status(msg.nonce))
        elif isinstance(msg, wire.Generate):
            with self._lock:
                self.generates.append(msg)
            if self.acknowledge:
                self._send(identity, wire.Accepted([msg.request_id], self.incarnation))
            if self.hang:
                return
            if self.fail_with is not None:
                out = wire.RequestOutput(
                    msg.request_id, [], finish_reason="error", error=self.fail_with
                )
                self._send(identity, wire.Outputs([out]))
                return
            tokens = self.reply_for(msg) if self.reply_for else self.reply_tokens
            self._active[msg.request_id] = _Active(identity, msg, list(tokens))
        elif isinstance(msg, wire.Abort):
            with self._lock:
                self.aborted.extend(msg.request_ids)
            for rid in msg.request_ids:
                self._active.pop(rid, None)

    def _tick(self) -> None:
        by_peer: dict[bytes, list[wire.RequestOutput]] = {}
        for rid, act in list(self._active.items()):
            token = act.tokens[act.sent]
            act.sent += 1
            spec = act.request.sampling
            finish: str | None = None
            if act.sent >= spec.max_tokens:
                finish = "length"
            elif act.sent >= len(act.tokens):
                finish = self.finish_reason
            logprobs = None
            if spec.logprobs is not None:
                top = [wire.TopLogprob(token, -0.25)] + [
                    wire.TopLogprob(t, -1.0 - i) for i, t in enumerate(range(100, 120))
                ]
                logprobs = [wire.TokenLogprob(token, -0.25, 1, top[: max(spec.logprobs, 1)])]
            out = wire.RequestOutput(
                rid,
                [token],
                logprobs=logprobs,
                finish_reason=finish,
                num_prompt_tokens=len(act.request.prompt_token_ids),
            )
            by_peer.setdefault(act.identity, []).append(out)
            if finish is not None:
                del self._active[rid]
        for identity, items in by_peer.items():
            self._send(identity, wire.Outputs(items))

    def _status(self, nonce: int) -> wire.Status:
        stages = [
            wire.StageStatus(
                "stage-0", "tcp://10.0.0.1:6000", 0, 15, "ready", 0.2,
                metrics="http://10.0.0.1:9101/metrics", dtype="bfloat16", max_model_len=1024,
            ),
            wire.StageStatus("stage-1", "tcp://10.0.0.2:6000", 15, 30, "ready", 0.4),
        ]  # fmt: skip
        return wire.Status(
            nonce=nonce,
            ready=self.ready,
            model="SmolLM2-135M-Instruct",
            max_model_len=self.max_model_len,
            num_layers=30,
            stages=stages,
            num_total_blocks=100,
            num_free_blocks=90,
            detail=self.detail,
            incarnation=self.incarnation,
            metrics="http://10.0.0.9:9100/metrics",
            dtype="bfloat16",
        )

    def _send(self, identity: bytes, msg: wire.Outputs | wire.Status | wire.Accepted) -> None:
        # ROUTER_MANDATORY raises when the gateway went away; like the real one, keep going.
        with contextlib.suppress(zmq.ZMQError):
            self._sock.send_multipart([identity, *codec.encode(msg)])
