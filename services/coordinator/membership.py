"""Stages joining, beating, leaving and lost: which chain the engine starts on or rebuilds with.

Pure logic over the registry and the pipeline's chain; no sockets. The coordinator's
I/O thread hands it the stage control messages and a `send` that queues a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from services.coordinator.authorization import Principal
from services.coordinator.registry import Registry, RegistryError, StageRecord
from services.coordinator.security import refusal_for_peer
from shared import wire

if TYPE_CHECKING:
    from services.coordinator.placing import Placing

log = logging.getLogger("layerbus.coordinator")

# Send a message to a ROUTER identity (the I/O thread's non-blocking send).
Send = Callable[[bytes, msgspec.Struct], None]


class Chain(Protocol):
    """What membership reads and asks of the pipeline (services.coordinator.pipeline)."""

    chain: list[Any]
    broken: str | None
    generation: int
    wants_chain: bool
    kv_configs: dict[tuple[int, int], Any]

    def break_chain(self, reason: str) -> None: ...

    def offer(self, chain: list[Any]) -> None: ...

    def configured(self, reply: wire.Configured) -> None: ...


def same_stage(record: StageRecord, msg: wire.Register) -> bool:
    """Whether a Register repeats a live stage's: the same process serving the same layers
    at the same address (a stage reloaded for a new range keeps its pid, not its range)."""
    return (
        record.state != "dead"
        and record.info.pid == msg.pid
        and record.layers == (msg.layer_start, msg.layer_end)
        and record.info.data_address == msg.data_address
    )


class Membership:
    """The stages the coordinator knows and the engine's chain of them; coordinator I/O thread.

    start_engine(chain) is called once, when live stages first cover every layer.
    """

    def __init__(
        self,
        registry: Registry,
        link: Chain,
        send: Send,
        start_engine: Callable[[list[StageRecord]], None],
    ) -> None:
        self.registry = registry
        self.link = link
        self.send = send
        self.start_engine = start_engine
        self.started = False  # whether start_engine was called
        self.placing: Placing | None = None  # stages without --layers (placing.py)

    def in_chain(self, record: StageRecord) -> bool:
        """Whether the record serves in the engine's current chain."""
        return self.started and any(r is record for r in self.link.chain)

    def lost(self, record: StageRecord, why: str) -> None:
        """A stage is gone; if it was in the chain, the engine rebuilds the chain."""
        if self.in_chain(record) and self.link.broken is None:
            self.link.break_chain(
                f"stage {record.name} (layers {record.layers[0]}:{record.layers[1]}) {why}"
            )

    def offer_chain(self) -> None:
        """The engine waits for a chain: offer one built from live stages, if any."""
        survivors = [r for r in self.link.chain if r.state != "dead"]
        chain = self.registry.chain(ranges=list(self.link.kv_configs), prefer=survivors)
        if chain is None and self.placing is not None:
            chain = self.placing.chain_for_engine()
        elif chain is not None and self.placing is not None:
            self.placing.planned = None  # a standby (or a returning stage) covers it
        if chain is not None:
            self.link.offer(chain)

    def maybe_start(self, announce: bool = False) -> None:
        """Start the engine once live stages cover every layer (announce: say what lacks)."""
        if self.started:
            return
        chain = self.registry.chain()
        if chain is None and self.placing is not None:
            self.placing.replan_to_start()  # after a stage was lost at the first configure
        if chain is None:
            if announce:
                placing = self.placing.waiting() if self.placing is not None else ""
                log.info(
                    "waiting for stages: layers %s not covered yet%s",
                    self.registry.missing(),
                    f"; {placing}" if placing else "",
                )
            return
        names = " -> ".join(f"{r.name}[{r.layers[0]}:{r.layers[1]}]" for r in chain)
        log.info("all layers covered: %s; starting the engine", names)
        if self.placing is not None:
            self.placing.engine_starts()
        self.start_engine(chain)
        self.started = True

    def start_failed(self, chain: list[StageRecord], refused: str | None, why: str) -> None:
        """The engine did not start on `chain`: a stage of it died, or `refused` refused its
        Configure. Drop those stages (a refusing one until it restarts) and start again with
        the others: placed stages are re-planned, pinned ones wait for a replacement."""
        if refused is not None:
            self.registry.refuse(refused)
        dropped = [r for r in chain if r.state == "dead"]
        for record in dropped:
            if self.placing is not None:
                self.placing.stage_lost_before_start(record.name)
        names = ", ".join(f"{r.name}[{r.layers[0]}:{r.layers[1]}]" for r in dropped)
        log.warning(
            "the engine did not start (%s); %s, starting again with the others",
            why,
            f"dropping {names}" if names else "no stage to drop",
        )
        self.started = False
        self.maybe_start(announce=True)

    def expire(self, now: float, timeout: float) -> None:
        """Stages silent for longer than timeout are dead; a chain stage among them is lost."""
        for record in self.registry.expire(now, timeout):
            log.error("stage %s (layers %d:%d) stopped responding", record.name, *record.layers)
            self.lost(record, "stopped responding")

    def beat(self, now: float) -> None:
        """The coordinator's heartbeat to every stage not presumed dead."""
        for record in self.registry.stages.values():
            if record.state != "dead":
                self.send(record.identity, wire.Heartbeat(name="coordinator", seq=int(now)))

    # ------------------------------------------------------------ stage messages
    # Handlers of the coordinator's table (server.HANDLERS): (ROUTER identity, message,
    # its sender, monotonic time of receipt); authorization.py has checked the sender.

    def on_register(self, identity: bytes, msg: wire.Register, who: Principal, now: float) -> None:
        """A stage offers its layers: a new stage, a repeat, or a restart under its name."""
        existing = self.registry.stages.get(msg.name)
        if self.registry.refused.get(msg.name) == msg.pid:
            return  # it refused its KV cache: left out until it restarts
        if existing is not None and same_stage(existing, msg):
            # The same process repeats its registration (until configured, or when this
            # coordinator was silent); a configured stage now offers the KV cache it holds.
            existing.last_seen = now
            existing.identity = identity
            existing.info = msg
            return
        try:
            record = self.registry.add(identity, msg, now)
        except RegistryError as err:
            log.error("refused stage registration: %s", err)
            reason = refusal_for_peer(str(err), self.registry.engine_fingerprint)
            self.send(identity, wire.Shutdown(reason=reason))
            return
        if existing is not None:
            # Another process under this name (a restart): the old one is gone.
            self.lost(existing, "was restarted")
            existing.state = "dead"
        if self.placing is not None:
            self.placing.on_register(identity, msg, now)
        log.info(
            "stage %s registered: layers %d:%d at %s (pid %d)",
            record.name,
            *record.layers,
            record.info.data_address,
            record.info.pid,
        )
        if not self.started:
            self.maybe_start()
        else:
            # Drop anything it holds from an earlier chain or coordinator; it is a standby
            # until a chain needs it.
            self.send(identity, wire.Reset(generation=self.link.generation))
            if self.link.wants_chain:
                self.offer_chain()

    def on_heartbeat(
        self, identity: bytes, msg: wire.Heartbeat, who: Principal, now: float
    ) -> None:
        """A stage's sign of life and work counters; a stage presumed dead becomes a standby."""
        existing = self.registry.stages.get(msg.name)
        was_dead = existing is not None and existing.state == "dead"
        record = self.registry.seen(msg.name, now, msg.pid)
        if record is None:
            return
        record.beat_at = now
        record.beat = msg
        if was_dead:
            if self.in_chain(record) and self.link.broken is None:
                return  # a pause shorter than recovery: the chain was not rebuilt yet
            log.warning("stage %s is responding again; it waits as a standby", record.name)
            # Whatever it still holds belongs to an old chain: drop it.
            self.send(record.identity, wire.Reset(generation=self.link.generation))

    def on_configured(
        self, identity: bytes, msg: wire.Configured, who: Principal, now: float
    ) -> None:
        """A stage allocated its KV cache (or says why not); only from the stage it names."""
        if identity.decode(errors="replace") == msg.name:
            self.registry.seen(msg.name, now)
            self.link.configured(msg)

    def on_leave(self, identity: bytes, msg: wire.Leave, who: Principal, now: float) -> None:
        """A stage is shutting down: dead now, and its chain is rebuilt at once."""
        record = self.registry.stages.get(msg.name)
        if record is not None and record.info.pid == msg.pid:
            log.warning("stage %s is leaving: %s", msg.name, msg.reason)
            self.registry.mark_dead(msg.name)
            self.lost(record, f"left ({msg.reason})")
