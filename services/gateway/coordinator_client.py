"""The gateway's DEALER connection to the coordinator: requests out, outputs routed back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import cast

import msgspec
import zmq
import zmq.asyncio

from shared import codec, wire
from shared.curve import ServiceKeys
from shared.settings import TransportSettings
from shared.sockets import make_socket

from .in_flight import InFlightRequests

log = logging.getLogger(__name__)


class CoordinatorUnavailable(RuntimeError):
    """The coordinator cannot take a message now (no pipe, or HWM reached); event loop."""


class OutputStream:
    """One HTTP request's outputs: fed by the reader task, read by the request's task."""

    def __init__(
        self, client: CoordinatorClient, request_ids: Sequence[str], timeout_s: float
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self.unfinished: set[str] = set(request_ids)
        self.queue: asyncio.Queue[wire.RequestOutput] = asyncio.Queue()

    async def get(self) -> wire.RequestOutput:
        """Next output; an error output if nothing arrives within the request timeout."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
        # races with an arriving item, and a disconnected client's task must stop.
        try:
            async with asyncio.timeout(self._timeout_s):
                out = await self.queue.get()
        except TimeoutError:
            rid = next(iter(self.unfinished))
            out = wire.RequestOutput(
                request_id=rid,
                token_ids=[],
                finish_reason="error",
                error=f"no output from the coordinator for {self._timeout_s:g}s "
                "(LAYERBUS_REQUEST_TIMEOUT_S)",
            )
            self._client.abort([rid])
        if out.finish_reason is not None:
            self.unfinished.discard(out.request_id)
            self._client.unroute(out.request_id)
        return out

    def finish(self, request_ids: Sequence[str]) -> None:
        """Stop following these requests and abort them on the coordinator."""
        ids = [rid for rid in request_ids if rid in self.unfinished]
        for rid in ids:
            self.unfinished.discard(rid)
            self._client.unroute(rid)
        if ids:
            self._client.abort(ids)

    def close(self) -> None:
        """Abort everything still running (client gone, error, or normal end: no-op)."""
        self.finish(list(self.unfinished))


class CoordinatorClient:
    """The DEALER connection to the coordinator; owns the socket, event loop only.

    A reader task routes Outputs to OutputStreams and Status replies to their
    waiters; a poller task asks for Status every interval so readiness and
    liveness are always known without a round-trip per HTTP request. After a
    coordinator restart only the requests the old incarnation held (or that never
    reached the new one) fail: see InFlightRequests.
    """

    def __init__(
        self,
        address: str,
        transport: TransportSettings,
        *,
        status_interval_s: float = 1.0,
        status_timeout_s: float = 2.0,
        coordinator_timeout_s: float = 10.0,
        request_timeout_s: float = 600.0,
    ) -> None:
        self.address = address
        self._transport = transport
        self._status_interval_s = status_interval_s
        self._status_timeout_s = status_timeout_s
        self._coordinator_timeout_s = coordinator_timeout_s
        self._request_timeout_s = request_timeout_s
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._routes: dict[str, OutputStream] = {}
        self._status_waiters: dict[int, asyncio.Future[wire.Status]] = {}
        self._next_nonce = 1
        self._in_flight = InFlightRequests()
        self._refresh: asyncio.Task[wire.Status] | None = None
        self._last_seen: float | None = None
        self._status: wire.Status | None = None
        self._status_at = 0.0
        self.identity = f"gw-{uuid.uuid4().hex[:12]}".encode()

    async def start(self) -> None:
        """Connect and start the reader and status-poller tasks."""
        self._ctx = zmq.asyncio.Context()
        keys = ServiceKeys.load(
            self._transport.secret_key, self._transport.coordinator_key, needs_coordinator=True
        )
        sock = make_socket(
            self._ctx,
            zmq.DEALER,
            self._transport,
            identity=self.identity,
            curve=keys.client_of(keys.coordinator),
        )
        sock.connect(self.address)
        self._sock = cast(zmq.asyncio.Socket, sock)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="coordinator-reader"),
            asyncio.create_task(self._poll_loop(), name="coordinator-status"),
        ]

    async def close(self) -> None:
        """Fail what is in flight, stop the tasks and close the socket."""
        self._fail_all("the gateway is shutting down")
        refresh = self._refresh
        tasks = self._tasks + ([refresh] if refresh is not None and not refresh.done() else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            # Linger so the Aborts sent just above still reach the coordinator.
            self._sock.close(linger=self._transport.linger_ms)
        if self._ctx is not None:
            self._ctx.term()

    # ------------------------------------------------------------ requests

    def generate(self, requests: Sequence[wire.Generate]) -> OutputStream:
        """Send Generate messages and return the stream their outputs arrive on."""
        stream = OutputStream(self, [r.request_id for r in requests], self._request_timeout_s)
        for req in requests:
            self._routes[req.request_id] = stream
        try:
            for req in requests:
                self._in_flight.sent(req.request_id, self._next_nonce)
                self._send(req)
        except CoordinatorUnavailable:
            stream.close()
            raise
        return stream

    def abort(self, request_ids: Sequence[str]) -> None:
        """Ask the coordinator to stop requests; never raises (aborting is best effort)."""
        if not request_ids:
            return
        try:
            self._send(wire.Abort(request_ids=list(request_ids)))
        except CoordinatorUnavailable:
            log.warning("could not send Abort for %s: coordinator unavailable", request_ids)

    def unroute(self, request_id: str) -> None:
        """Forget a request; its late outputs are dropped."""
        self._routes.pop(request_id, None)
        self._in_flight.forget(request_id)

    def _send(self, msg: msgspec.Struct) -> None:
        if self._sock is None:
            raise CoordinatorUnavailable("coordinator client is not started")
        # NOBLOCK: a full or missing pipe must fail the request, never stall the loop.
        fut = cast(
            "asyncio.Future[object]",
            self._sock.send_multipart(codec.encode(msg), flags=zmq.NOBLOCK),
        )
        error = fut.exception() if fut.done() else None
        if error is not None:
            raise CoordinatorUnavailable(f"cannot send to the coordinator: {error}")

    # ------------------------------------------------------------ status

    @property
    def status(self) -> wire.Status | None:
        """The latest Status, or None if it is older than the coordinator timeout."""
        if self._status is None:
            return None
        if time.monotonic() - self._status_at > self._coordinator_timeout_s:
            return None
        return self._status

    def ready_status(self) -> wire.Status | None:
        """The latest Status if the coordinator is alive and ready, else None."""
        status = self.status
        return status if status is not None and status.ready else None

    async def ready_status_now(self) -> wire.Status | None:
        """ready_status(); when the coordinator answers but was not ready, ask it again first.

        A restarted or recovering coordinator turns ready between two polls; a request
        arriving then must not be refused on the poll's stale answer. Concurrent callers
        share one query.
        """
        status = self.status
        if status is None or status.ready:
            return status
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self.query_status(), name="coordinator-refresh")
            # Retrieved here too, in case every caller was cancelled (client gone) first.
            self._refresh.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            status = await asyncio.shield(self._refresh)
        except (TimeoutError, CoordinatorUnavailable):
            return None
        return status if status.ready else None

    async def query_status(self, timeout_s: float | None = None) -> wire.Status:
        """A fresh Status; raises TimeoutError or CoordinatorUnavailable."""
        nonce, self._next_nonce = self._next_nonce, self._next_nonce + 1
        fut: asyncio.Future[wire.Status] = asyncio.get_running_loop().create_future()
        self._status_waiters[nonce] = fut
        try:
            self._send(wire.StatusQuery(nonce=nonce))
            async with asyncio.timeout(timeout_s or self._status_timeout_s):
                return await fut
        finally:
            self._status_waiters.pop(nonce, None)

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.query_status()
            except (TimeoutError, CoordinatorUnavailable) as err:
                log.debug("status query failed: %r", err)
            if self._last_seen is not None and self._routes:
                silent = time.monotonic() - self._last_seen
                if silent > self._coordinator_timeout_s:
                    self._fail_all(
                        f"coordinator {self.address} silent for {silent:.0f}s "
                        "(LAYERBUS_COORDINATOR_TIMEOUT_S)"
                    )
            await asyncio.sleep(self._status_interval_s)

    # ------------------------------------------------------------ reader

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                frames = await self._sock.recv_multipart()
                msg = codec.decode(frames)
            except wire.WireError as err:
                log.warning("dropping bad message from the coordinator: %s", err)
                continue
            except zmq.ZMQError as err:
                log.error("receiving from the coordinator failed: %s", err)
                await asyncio.sleep(self._status_interval_s)
                continue
            self._last_seen = time.monotonic()
            if isinstance(msg, wire.Outputs):
                self._dispatch(msg.items)
            elif isinstance(msg, wire.Accepted):
                self._in_flight.accepted(msg.request_ids, msg.incarnation)
            elif isinstance(msg, wire.Status):
                self._on_status(msg)
                self._status, self._status_at = msg, self._last_seen
                waiter = self._status_waiters.get(msg.nonce)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            else:
                log.warning("unexpected %s from the coordinator", type(msg).__name__)

    def _on_status(self, msg: wire.Status) -> None:
        previous = self._in_flight.incarnation
        held, lost = self._in_flight.on_status(msg.nonce, msg.incarnation)
        if previous is not None and previous != msg.incarnation:
            log.warning(
                "the coordinator restarted (incarnation %s -> %s); failing %d requests "
                "the old one held and %d it never acknowledged",
                previous,
                msg.incarnation,
                len(held),
                len(lost),
            )
        self._fail(held, "the coordinator restarted; retry the request")
        self._fail(lost, "the coordinator restarted before it received the request; retry it")

    def _dispatch(self, items: Sequence[wire.RequestOutput]) -> None:
        for item in items:
            stream = self._routes.get(item.request_id)
            if stream is not None:
                stream.queue.put_nowait(item)
                if item.finish_reason is not None:
                    # Finished: a restart seen before the stream reads this must not
                    # queue a second, contradicting end for it.
                    self.unroute(item.request_id)

    def _fail_all(self, reason: str) -> None:
        self._fail(list(self._routes), reason)

    def _fail(self, request_ids: Sequence[str], reason: str) -> None:
        """End these requests with an error output; the coordinator no longer has them."""
        for rid in request_ids:
            self._in_flight.forget(rid)
            stream = self._routes.pop(rid, None)
            if stream is not None:
                stream.queue.put_nowait(
                    wire.RequestOutput(
                        request_id=rid, token_ids=[], finish_reason="error", error=reason
                    )
                )
