"""Peer registry: which stages exist, their layer ranges, liveness (pure logic, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import wire


class RegistryError(ValueError):
    """A stage registration that cannot be accepted, with the reason."""


@dataclass
class StageRecord:
    """What the coordinator knows about one stage; owned by the coordinator I/O thread."""

    identity: bytes
    info: wire.Register
    last_seen: float
    state: str = "registered"  # registered -> configured -> (dead)
    num_blocks: int = 0
    state_before_death: str = "registered"
    extra: dict[str, str] = field(default_factory=dict)
    beat: wire.Heartbeat | None = None  # the stage's latest counters
    beat_at: float = 0.0  # when `beat` arrived (monotonic)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def layers(self) -> tuple[int, int]:
        return self.info.layer_start, self.info.layer_end


class Registry:
    """Stages by name; finds a chain of stages that covers every layer exactly once."""

    def __init__(self, num_layers: int, engine_fingerprint: str) -> None:
        self.num_layers = num_layers
        self.engine_fingerprint = engine_fingerprint
        self.stages: dict[str, StageRecord] = {}
        # Stages that refused their Configure (name -> pid): dead until they restart.
        self.refused: dict[str, int] = {}

    def add(self, identity: bytes, info: wire.Register, now: float) -> StageRecord:
        """Accept (or refresh) a registration; RegistryError says what to fix."""
        if info.num_layers != self.num_layers:
            raise RegistryError(
                f"{info.name} serves a model with {info.num_layers} layers, the coordinator's "
                f"has {self.num_layers}; start both with the same --model"
            )
        if info.engine_fingerprint != self.engine_fingerprint:
            raise RegistryError(
                f"{info.name} runs with [{info.engine_fingerprint}], the coordinator with "
                f"[{self.engine_fingerprint}]; give every service the same LAYERBUS_* engine "
                "settings"
            )
        if not 0 <= info.layer_start < info.layer_end <= self.num_layers:
            raise RegistryError(f"{info.name}: layer range {info.layer_start}:{info.layer_end}")
        record = StageRecord(identity=identity, info=info, last_seen=now)
        self.stages[info.name] = record
        self.refused.pop(info.name, None)
        return record

    def seen(self, name: str, now: float, pid: int = 0) -> StageRecord | None:
        """Note a sign of life; a stage presumed dead that speaks again is revived.

        A message from another process (pid) than the registered one is not a
        sign of life of the registered stage: None.
        """
        record = self.stages.get(name)
        if record is None or (pid and record.info.pid != pid):
            return None
        if self.refused.get(name) == record.info.pid:
            return None  # alive, but it refused its KV cache: it stays out
        record.last_seen = now
        if record.state == "dead":
            record.state = record.state_before_death
        return record

    def mark_dead(self, name: str) -> StageRecord | None:
        """A stage said it is leaving (or was replaced): dead now, not after a timeout."""
        record = self.stages.get(name)
        if record is not None and record.state != "dead":
            record.state_before_death = record.state
            record.state = "dead"
        return record

    def refuse(self, name: str) -> None:
        """A stage refused its Configure: dead, and not revived by its heartbeats or repeated
        registrations, until another process registers under its name."""
        record = self.mark_dead(name) or self.stages.get(name)
        if record is not None:
            self.refused[name] = record.info.pid

    def expire(self, now: float, timeout: float) -> list[StageRecord]:
        """Mark stages silent for longer than timeout as dead; return the newly dead."""
        newly_dead = []
        for record in self.stages.values():
            if record.state != "dead" and now - record.last_seen > timeout:
                record.state_before_death = record.state
                record.state = "dead"
                newly_dead.append(record)
        return newly_dead

    def chain(
        self,
        ranges: list[tuple[int, int]] | None = None,
        prefer: list[StageRecord] | None = None,
    ) -> list[StageRecord] | None:
        """Live stages ordered by layer, covering [0, num_layers) with no gap or overlap.

        With `ranges`, only a chain of exactly those layer ranges (a rebuild
        keeps the KV cache layout); stages in `prefer` (the surviving chain)
        come first, then configured standbys, then the rest by name.
        """
        preferred = {id(r) for r in prefer or []}
        live = [r for r in self.stages.values() if r.state != "dead"]
        by_start: dict[int, StageRecord] = {}
        for record in sorted(
            live, key=lambda r: (id(r) not in preferred, r.state != "configured", r.name)
        ):
            if ranges is not None and record.layers not in ranges:
                continue
            by_start.setdefault(record.info.layer_start, record)
        chain: list[StageRecord] = []
        position = 0
        while position < self.num_layers:
            nxt = by_start.get(position)
            if nxt is None:
                return None
            chain.append(nxt)
            position = nxt.info.layer_end
        return chain

    def missing(self) -> str:
        """Human-readable description of the layers no live stage covers yet."""
        covered = [False] * self.num_layers
        for record in self.stages.values():
            if record.state != "dead":
                for layer in range(*record.layers):
                    covered[layer] = True
        gaps, start = [], None
        for layer, ok in enumerate([*covered, True]):
            if not ok and start is None:
                start = layer
            elif ok and start is not None:
                gaps.append(f"{start}:{layer}")
                start = None
        return ", ".join(gaps) if gaps else "none"
