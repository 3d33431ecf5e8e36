"""A TCP proxy that holds every byte for a set one-way delay, in both directions.

`netem` does not exist on these machines, so WAN latency is added here: each
chunk read from one side is written to the other side no earlier than
`delay` after it was read. Each direction has a bounded buffer: when it is
full the proxy stops reading, TCP's window fills and the sender blocks
(back-pressure, never unbounded memory). A half-close (EOF) travels through
after the bytes before it; a reset closes both sides.

    python -m benchmark.delay_proxy --listen 127.0.0.1:7001 --target 127.0.0.1:6001 \
        --listen 127.0.0.1:7002 --target 127.0.0.1:6002 --delay-ms 100

Several --listen/--target pairs are served by one process (paired in order).
It prints one `delay_proxy ready` line when every listener is up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import signal
import sys
from dataclasses import dataclass

CHUNK_BYTES = 64 * 1024


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an optional tcp:// prefix is accepted) -> (host, port)."""
    host, sep, port = text.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class DelayLine:
    """Chunks with their release times and a byte budget; owned by one direction's tasks.

    The reader puts, the writer takes; both run on the proxy's event loop thread.
    """

    def __init__(self, delay_s: float, max_bytes: int) -> None:
        if delay_s < 0:
            raise ValueError("delay must be >= 0 (--delay-ms)")
        if max_bytes < CHUNK_BYTES:
            raise ValueError(f"buffer must hold at least {CHUNK_BYTES} bytes (--buffer-bytes)")
        self.delay_s = delay_s
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self._chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self._changed = asyncio.Condition()

    async def put(self, chunk: bytes, read_at: float) -> None:
        """Queue a chunk read at `read_at`; waits while the buffer is full."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held_bytes + len(chunk) <= self.max_bytes)
            self._chunks.append((read_at + self.delay_s, chunk))
            self.held_bytes += len(chunk)
            self._changed.notify_all()

    async def get(self) -> bytes:
        """The oldest chunk, once its release time has come (b"" marks EOF)."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._chunks))
            release_at, chunk = self._chunks[0]
        wait = release_at - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        async with self._changed:
            self._chunks.popleft()
            self.held_bytes -= len(chunk)
            self._changed.notify_all()
        return chunk


async def _read_into(reader: asyncio.StreamReader, line: DelayLine) -> None:
    loop = asyncio.get_running_loop()
    while True:
        chunk = await reader.read(CHUNK_BYTES)
        await line.put(chunk, loop.time())
        if not chunk:
            return


async def _write_from(line: DelayLine, writer: asyncio.StreamWriter) -> None:
    while True:
        chunk = await line.get()
        if not chunk:
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(chunk)
        await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float, max_bytes: int
) -> None:
    line = DelayLine(delay_s, max_bytes)
    async with asyncio.TaskGroup() as group:
        group.create_task(_read_into(reader, line))
        group.create_task(_write_from(line, writer))


@dataclass
class Route:
    """One listening address and where its connections go."""

    listen: tuple[str, int]
    target: tuple[str, int]


class DelayProxy:
    """Listeners for every route; runs on one asyncio event loop thread."""

    def __init__(self, routes: list[Route], delay_s: float, buffer_bytes: int) -> None:
        DelayLine(delay_s, buffer_bytes)  # validate the settings before listening
        self.routes = routes
        self.delay_s = delay_s
        self.buffer_bytes = buffer_bytes
        self.servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._accept, route=route), *route.listen
            )
            self.servers.append(server)

    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of each listener, in route order."""
        return [server.sockets[0].getsockname()[:2] for server in self.servers]

    async def _accept(
        self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter, route: Route
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        up_w: asyncio.StreamWriter | None = None
        try:
            up_r, up_w = await asyncio.open_connection(*route.target)
            await self._forward(down_r, down_w, up_r, up_w)
        except (ConnectionError, OSError):
            pass  # a refused target: the client's side is closed below
        except asyncio.CancelledError:
            pass  # close(): end quietly (asyncio's server callback logs a cancelled task)
        finally:
            for w in (down_w, up_w):
                if w is not None:
                    w.close()
            self._connections.discard(task)

    async def _forward(
        self,
        down_r: asyncio.StreamReader,
        down_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        try:
            # A TaskGroup cancels the other direction when one fails (a reset).
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(down_r, up_w, self.delay_s, self.buffer_bytes))
                group.create_task(_pipe(up_r, down_w, self.delay_s, self.buffer_bytes))
        except* (ConnectionError, OSError):
            pass  # a reset: both sides are closed by the caller

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.delay_proxy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", action="append", required=True, help="HOST:PORT to accept")
    parser.add_argument("--target", action="append", required=True, help="HOST:PORT to forward")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="one-way delay, ms")
    parser.add_argument(
        "--buffer-bytes",
        type=int,
        default=16 << 20,
        help="most bytes held per direction per connection (back-pressure beyond)",
    )
    args = parser.parse_args(argv)
    if len(args.listen) != len(args.target):
        parser.error("give one --target for each --listen (paired in order)")
    return args


async def _serve(args: argparse.Namespace) -> None:
    routes = [
        Route(parse_address(a), parse_address(b))
        for a, b in zip(args.listen, args.target, strict=True)
    ]
    proxy = DelayProxy(routes, args.delay_ms / 1000.0, args.buffer_bytes)
    await proxy.start()
    pairs = ", ".join(
        f"{h}:{p} -> {r.target[0]}:{r.target[1]}"
        for (h, p), r in zip(proxy.addresses(), routes, strict=True)
    )
    print(f"delay_proxy ready ({args.delay_ms:g} ms): {pairs}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
