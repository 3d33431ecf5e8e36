"""CoordinatorClient against a real ROUTER: status, routing, aborts, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import zmq

from services.gateway.coordinator_client import (
    CoordinatorClient,
    CoordinatorUnavailable,
    OutputStream,
)
from shared import codec, wire
from shared.settings import TransportSettings
from tests.unit.gateway.fake_coordinator import FakeCoordinator

T = TypeVar("T")


def client_for(address: str, **kw: float) -> CoordinatorClient:
    opts = {
        "status_interval_s": 0.05,
        "status_timeout_s": 0.3,
        "coordinator_timeout_s": 0.5,
        "request_timeout_s": 10.0,
    }
    opts.update(kw)
    # Linger on close so Aborts sent just before close() are delivered.
    transport = TransportSettings.model_validate({"linger_ms": 1000})
    return CoordinatorClient(address, transport, **opts)


def run_with(client: CoordinatorClient, body: Callable[[CoordinatorClient], Awaitable[T]]) -> T:
    async def scenario() -> T:
        await client.start()
        try:
            return await asyncio.wait_for(body(client), 30)
        finally:
            await client.close()

    return asyncio.run(scenario())


def generate(rid: str, max_tokens: int = 100) -> wire.Generate:
    return wire.Generate(rid, [1, 2, 3], wire.SamplingSpec(max_tokens=max_tokens))


async def drain(
    stream_get: Callable[[], Awaitable[wire.RequestOutput]], ids: set[str]
) -> dict[str, list[wire.RequestOutput]]:
    outs: dict[str, list[wire.RequestOutput]] = {}
    open_ids = set(ids)
    while open_ids:
        out = await stream_get()
        outs.setdefault(out.request_id, []).append(out)
        if out.finish_reason is not None:
            open_ids.discard(out.request_id)
    return outs


def test_status_query_returns_the_coordinators_status(fake: FakeCoordinator) -> None:
    async def body(client: CoordinatorClient) -> wire.Status:
        return await client.query_status()

    status = run_with(client_for(fake.address), body)
    assert status.ready and status.max_model_len == fake.max_model_len
    assert [(s.layer_start, s.layer_end) for s in status.stages] == [(0, 15), (15, 30)]


def test_poller_keeps_a_fresh_ready_status(fake: FakeCoordinator) -> None:
    async def body(client: CoordinatorClient) -> bool:
        while client.ready_status() is None:
            await asyncio.sleep(0.01)
        fake.ready = False
        while client.ready_status() is not None:
            await asyncio.sleep(0.01)
        return client.status is not None and not client.status.ready

    assert run_with(client_for(fake.address), body)


def test_status_times_out_when_nobody_answers() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.ROUTER) as silent:
        port = silent.bind_to_random_port("tcp://127.0.0.1")

        async def body(client: CoordinatorClient) -> None:
            with pytest.raises(TimeoutError):
                await client.query_status(timeout_s=0.2)
            assert client.status is None and client.ready_status() is None

        run_with(client_for(f"tcp://127.0.0.1:{port}"), body)


def test_outputs_are_routed_to_their_stream(fake: FakeCoordinator) -> None:
    async def body(client: CoordinatorClient) -> tuple[dict[str, list[wire.RequestOutput]], ...]:
        a = client.generate([generate("a-0"), generate("a-1", max_tokens=3)])
        b = client.generate([generate("b-0", max_tokens=2)])
        return await drain(a.get, {"a-0", "a-1"}), await drain(b.get, {"b-0"})

    a_outs, b_outs = run_with(client_for(fake.address), body)
    assert set(a_outs) == {"a-0", "a-1"} and set(b_outs) == {"b-0"}
    assert sum(len(o.token_ids) for o in a_outs["a-0"]) == len(fake.reply_tokens)
    assert a_outs["a-0"][-1].finish_reason == "stop"
    assert [o.finish_reason for o in a_outs["a-1"]] == [None, None, "length"]
    assert sum(len(o.token_ids) for o in b_outs["b-0"]) == 2


def test_close_on_a_stream_aborts_unfinished_requests(fake: FakeCoordinator) -> None:
    fake.hang = True

    async def body(client: CoordinatorClient) -> None:
        stream = client.generate([generate("x-0"), generate("x-1")])
        stream.finish(["x-0"])
        stream.close()
        stream.close()  # idempotent: nothing left to abort

    run_with(client_for(fake.address), body)
    assert fake.wait_for(lambda: sorted(fake.aborted) == ["x-0", "x-1"])


def test_request_without_output_fails_after_request_timeout(fake: FakeCoordinator) -> None:
    fake.hang = True

    async def body(client: CoordinatorClient) -> wire.RequestOutput:
        return await client.generate([generate("slow-0")]).get()

    out = run_with(client_for(fake.address, request_timeout_s=0.3), body)
    assert out.finish_reason == "error" and "LAYERBUS_REQUEST_TIMEOUT_S" in (out.error or "")
    assert fake.wait_for(lambda: "slow-0" in fake.aborted)


def test_silent_coordinator_fails_requests_in_flight(fake: FakeCoordinator) -> None:
    fake.hang = True

    async def body(client: CoordinatorClient) -> wire.RequestOutput:
        while client.ready_status() is None:
            await asyncio.sleep(0.01)
        stream = client.generate([generate("lost-0")])
        fake.answer_status = False  # the coordinator goes quiet
        return await stream.get()

    out = run_with(client_for(fake.address, coordinator_timeout_s=0.4), body)
    assert out.finish_reason == "error" and "silent" in (out.error or "")


def test_send_fails_fast_when_not_started() -> None:
    client = client_for("tcp://127.0.0.1:1")
    with pytest.raises(CoordinatorUnavailable):
        client.generate([generate("nope")])
    client.abort(["nope"])  # best effort, never raises


def test_malformed_frames_are_dropped_and_the_reader_keeps_going() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.ROUTER) as router:
        port = router.bind_to_random_port("tcp://127.0.0.1")

        async def body(client: CoordinatorClient) -> wire.Status:
            query = asyncio.create_task(client.query_status(timeout_s=5))
            # Two queries arrive: the poller's first one and ours. Junk before each reply.
            for _ in range(2):
                identity, tag, payload = await asyncio.to_thread(router.recv_multipart)
                nonce = codec.decode([tag, payload]).nonce  # type: ignore[attr-defined]
                router.send_multipart([identity, b"\x99", b"junk"])  # unknown tag
                router.send_multipart([identity, b"\x11", b"\xc1"])  # bad msgpack
                status = wire.Status(nonce, True, "m", 64, 2, [])
                router.send_multipart([identity, *codec.encode(status)])
            return await query

        # A long interval so only our query is on the wire.
        status = run_with(client_for(f"tcp://127.0.0.1:{port}", status_interval_s=60), body)
        assert status.ready and status.max_model_len == 64


@pytest.mark.parametrize("yields", [0, 1, 2, 3])
def test_cancelling_a_reader_is_never_swallowed_by_an_arriving_output(yields: int) -> None:
    """A disconnected client's task must stop even if an output lands at the same moment."""

    async def scenario() -> bool:
        stream = OutputStream(client_for("tcp://127.0.0.1:1"), ["r-0"], timeout_s=30)
        task = asyncio.create_task(stream.get())
        await asyncio.sleep(0)  # the reader is now waiting on the queue
        stream.queue.put_nowait(wire.RequestOutput("r-0", [1]))
        for _ in range(yields):
            await asyncio.sleep(0)
        requested = task.cancel()  # False only if get() already returned
        await asyncio.wait([task])
        return task.cancelled() or not requested

    assert asyncio.run(scenario())


def test_a_restart_fails_only_what_the_old_incarnation_held(fake: FakeCoordinator) -> None:
    fake.reply_tokens = [5, 6, 7]
    fake.token_delay_s = 0.5  # "fresh" is still streaming when the new Status arrives

    async def body(client: CoordinatorClient) -> dict[str, list[wire.RequestOutput]]:
        await client.query_status()
        fake.hang = True
        old = client.generate([generate("held-by-old")])
        assert fake.wait_for(lambda: fake.generate_ids() == ["held-by-old"])
        await client.query_status()  # its Accepted has arrived before this reply
        # The coordinator restarts; the gateway still holds the old status when it
        # sends the next request, which the new incarnation serves.
        fake.hang, fake.incarnation = False, "fake-2"
        fresh = client.generate([generate("fresh")])
        assert client.ready_status() is not None
        assert (await client.query_status()).incarnation == "fake-2"
        outs = await drain(old.get, {"held-by-old"})
        outs.update(await drain(fresh.get, {"fresh"}))
        return outs

    # A long interval: only the test's own queries are on the wire.
    outs = run_with(client_for(fake.address, status_interval_s=60), body)
    assert [o.finish_reason for o in outs["held-by-old"]] == ["error"]
    assert "restarted" in (outs["held-by-old"][0].error or "")
    assert [t for o in outs["fresh"] for t in o.token_ids] == [5, 6, 7]
    assert outs["fresh"][-1].finish_reason == "stop"


def test_a_request_the_old_incarnation_never_acknowledged_fails_on_restart(
    fake: FakeCoordinator,
) -> None:
    async def body(client: CoordinatorClient) -> wire.RequestOutput:
        await client.query_status()
        fake.hang, fake.acknowledge = True, False  # received by nobody that answers
        stream = client.generate([generate("lost")])
        assert fake.wait_for(lambda: fake.generate_ids() == ["lost"])
        fake.incarnation = "fake-2"
        await client.query_status()
        return await stream.get()

    out = run_with(client_for(fake.address, status_interval_s=60), body)
    assert out.finish_reason == "error" and "before it received" in (out.error or "")


def test_a_not_ready_answer_is_asked_again_before_a_request_is_refused(
    fake: FakeCoordinator,
) -> None:
    fake.ready = False

    async def body(client: CoordinatorClient) -> tuple[bool, bool, int]:
        await client.query_status()
        still_not_ready = await client.ready_status_now() is None
        fake.ready = True  # ready between two polls
        before = fake.status_queries
        now_ready = await client.ready_status_now() is not None
        return still_not_ready, now_ready, fake.status_queries - before

    still_not_ready, now_ready, queries = run_with(
        client_for(fake.address, status_interval_s=60), body
    )
    assert still_not_ready and now_ready and queries == 1


def test_a_finished_request_not_yet_read_gets_no_second_end_from_a_restart(
    fake: FakeCoordinator,
) -> None:
    fake.reply_tokens = [5, 6]

    async def body(client: CoordinatorClient) -> tuple[list[wire.RequestOutput], int]:
        await client.query_status()
        stream = client.generate([generate("done")])
        for _ in range(1000):  # bounded: until both outputs are queued, unread
            if stream.queue.qsize() == 2:
                break
            await asyncio.sleep(0.01)
        fake.incarnation = "fake-2"
        await client.query_status()
        outs = [await stream.get(), await stream.get()]
        return outs, stream.queue.qsize()

    outs, left = run_with(client_for(fake.address, status_interval_s=60), body)
    assert [(o.token_ids, o.finish_reason) for o in outs] == [([5], None), ([6], "stop")]
    assert left == 0
