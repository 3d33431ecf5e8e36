"""Rebuilding a broken chain from live stages, or giving up in time (no sockets, no threads).

After a chain stage dies the engine thread drops its steps in flight
(PipelineEngineCore.restart_all) and asks the I/O thread for a chain of live
stages. Each offered chain is configured afresh: every stage drops every
request, since a stage may hold tokens of steps whose results were lost (the
token ring), so resumed requests are taken up from the coordinator's state.
Before that, `prepare` sizes the chain's KV cache (kv_resplit.ChainKv: the engine
shrinks when a stage of it holds fewer blocks). A chain that cannot be sized,
fails to configure, or loses a stage while configuring, is dropped and the next
one asked for (a refused one again after RETRY_S). When no chain is rebuilt within the recovery
timeout the pipeline is unavailable: running requests fail, new ones are
refused, and the rebuild goes on waiting for the missing layers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from services.coordinator.pipeline import PipelineFailed, PipelineLink

log = logging.getLogger("layerbus.coordinator")

# Seconds before a chain that could not be adopted is asked for again (the same live
# stages usually offer the same chain).
RETRY_S = 2.0


class Rebuilt(NamedTuple):
    """A new chain serves: its stages' names in order; an immutable value."""

    names: str


class Unavailable(NamedTuple):
    """No chain within the recovery timeout, and why (sent to every request); an immutable value."""

    message: str


def unavailable_message(
    layer_ranges: Iterable[tuple[int, int]], survivors: list[Any], timeout_s: float
) -> str:
    """Which layer ranges no surviving stage serves, and the setting that waited for them."""
    served = {r.layers for r in survivors}
    missing = ", ".join(f"{a}:{b}" for a, b in sorted(layer_ranges) if (a, b) not in served)
    return (
        f"pipeline unavailable: no stage for layers {missing or '?'} joined within "
        f"{timeout_s:.0f} s (LAYERBUS_RECOVERY_TIMEOUT_S); start a stage for those layers"
    )


class ChainRebuild:
    """One rebuild of the chain after a stage died; polled by the engine thread."""

    def __init__(
        self,
        link: PipelineLink,
        configure_timeout_s: float,
        recovery_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.link = link
        self.prepare = prepare  # sizes a chain's KV cache before it is configured
        self.retry_at: float | None = None
        self.last_error = ""
        self.configure_timeout_s = configure_timeout_s
        self.recovery_timeout_s = recovery_timeout_s
        self.clock = clock
        self.deadline = clock() + recovery_timeout_s
        self.survivors = [r for r in link.chain if r.state != "dead"]
        self.timed_out = False
        link.request_chain()

    def poll(self) -> Rebuilt | Unavailable | None:
        """Adopt the chain on offer, if any; Unavailable once, when the timeout passes."""
        if self.retry_at is not None and self.clock() >= self.retry_at:
            self.retry_at = None
            self.link.request_chain()
        chain = self.link.take_offer()
        if chain is not None:
            return self._adopt(chain)
        if not self.timed_out and self.clock() > self.deadline:
            self.timed_out = True
            message = unavailable_message(
                self.link.kv_configs, self.survivors, self.recovery_timeout_s
            )
            log.error("%s", message)
            self.link.failure = message
            return Unavailable(message)
        return None

    def _adopt(self, chain: list[Any]) -> Rebuilt | None:
        names = " -> ".join(r.name for r in chain)
        try:
            self.link.broken = None
            if self.prepare is not None:
                self.prepare(chain)
            self.link.reconfigure(chain, self.configure_timeout_s, [])
        except PipelineFailed as err:
            message = f"could not rebuild the chain {names}: {err}"
            if message != self.last_error:
                log.error("%s", message)
            self.last_error = message
            self.link.broken = str(err)
            self.retry_at = self.clock() + RETRY_S
            return None
        if self.link.broken is not None:
            return None  # a stage of the new chain died while configuring
        return Rebuilt(names)
