import asyncio
import os

import pytest

from benchmark.delay_proxy import CHUNK_BYTES, DelayLine, DelayProxy, Route, parse_address

DELAY_S = 0.05


class Target:
    """A loopback server that records what it reads (with times) and answers on request."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.first_byte_at: float | None = None
        self.eof = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]  # type: ignore[no-any-return]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        loop = asyncio.get_running_loop()
        while chunk := await reader.read(1 << 16):
            if self.first_byte_at is None:
                self.first_byte_at = loop.time()
            self.received += chunk
        self.eof.set()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _start(targets: list[Target]) -> DelayProxy:
    routes = [Route(("127.0.0.1", 0), await t.start()) for t in targets]
    proxy = DelayProxy(routes, DELAY_S, 1 << 20)
    await proxy.start()
    return proxy


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while chunk := await reader.read(1 << 16):
        out += chunk
    return bytes(out)


def test_bytes_arrive_intact_in_order_both_ways_and_after_the_delay() -> None:
    async def scenario() -> None:
        target = Target()
        proxy = await _start([target])
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(*proxy.addresses()[0])
        upstream = os.urandom(3 * (1 << 20) + 17)  # more than the 1 MiB buffer
        sent_at = loop.time()
        for i in range(0, len(upstream), 100_000):
            writer.write(upstream[i : i + 100_000])
            await writer.drain()
        writer.write_eof()
        await target.eof.wait()
        assert bytes(target.received) == upstream
        assert target.first_byte_at is not None
        assert target.first_byte_at - sent_at >= DELAY_S

        downstream = os.urandom((1 << 20) + 5)
        answered_at = loop.time()
        target.writers[0].write(downstream)
        target.writers[0].write_eof()
        got = await _read_all(reader)
        assert got == downstream
        assert loop.time() - answered_at >= DELAY_S
        writer.close()
        await proxy.close()
        await target.close()

    asyncio.run(scenario())


def test_one_process_serves_several_routes() -> None:
    async def scenario() -> None:
        targets = [Target(), Target()]
        proxy = await _start(targets)
        for address, payload in zip(proxy.addresses(), [b"first", b"second"], strict=True):
            _, writer = await asyncio.open_connection(*address)
            writer.write(payload)
            writer.write_eof()
            await writer.drain()
            writer.close()
        for target in targets:
            await target.eof.wait()
        assert [bytes(t.received) for t in targets] == [b"first", b"second"]
        await proxy.close()
        for target in targets:
            await target.close()

    asyncio.run(scenario())


def test_a_full_delay_line_holds_the_reader_back() -> None:
    async def scenario() -> None:
        line = DelayLine(0.0, CHUNK_BYTES)
        loop = asyncio.get_running_loop()
        await line.put(b"a" * CHUNK_BYTES, loop.time())
        blocked = asyncio.create_task(line.put(b"b", loop.time()))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not blocked.done()
        assert line.held_bytes == CHUNK_BYTES
        assert await line.get() == b"a" * CHUNK_BYTES
        await blocked
        assert await line.get() == b"b"
        assert line.held_bytes == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "host:port", ""])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_addresses_accept_a_tcp_prefix() -> None:
    assert parse_address("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="--buffer-bytes"):
        DelayProxy([], 0.1, 10)
    with pytest.raises(ValueError, match="--delay-ms"):
        DelayProxy([], -1.0, 1 << 20)


def test_closing_the_proxy_ends_open_connections_quietly() -> None:
    async def scenario() -> None:
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        target = Target()
        proxy = await _start([target])
        reader, writer = await asyncio.open_connection(*proxy.addresses()[0])
        writer.write(b"hello")
        while not target.received:
            await asyncio.sleep(0.01)
        await proxy.close()
        assert await _read_all(reader) == b""
        for _ in range(5):
            await asyncio.sleep(0)
        assert errors == []
        writer.close()
        await target.close()

    asyncio.run(scenario())
