"""Stages that offered capacity, and the ranges placement gave them (pure logic, no sockets).

A stage started without --layers sends wire.Offer until it is assigned a range. The
coordinator plans once the offers have settled (no new one for `settle_s`): pinned
stages (--layers) keep their ranges, stages that registered after an earlier
assignment keep theirs, and the offering stages fill the gaps (services/coordinator/
placement.py). An offer that arrives when the layers are covered becomes a standby
for the range where it helps most: the slowest range it can hold that no other
standby holds yet. An assigned stage that stops offering before it registers (it died
while loading) is dropped, and the plan is made again with the others. A restarted
coordinator learns the placed stages from their Register, which carries the offer each
measured: they stay free to move, pinned stages keep their ranges.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from services.coordinator.placement import (
    Placement,
    PlacementError,
    StageCapacity,
    plan,
)
from services.coordinator.placement_costs import ModelProfile, StageCosts
from services.coordinator.registry import Registry, RegistryError, StageRecord
from shared import wire

# How many heartbeat timeouts a stage loading its assigned layers may stay silent.
LOADING_GRACE = 6
# A pinned stage's speed is not measured; it enters the plan at the offers' median.
UNMEASURED_S = 1e-3


@dataclass
class OfferRecord:
    """One offering stage; owned by the coordinator I/O thread."""

    identity: bytes
    offer: wire.Offer
    first_seen: float
    last_seen: float
    assigned: tuple[int, int] | None = None
    standby: bool = False
    reason: str = ""
    registered: bool = False  # loaded its range and registered (stops offering)

    @property
    def name(self) -> str:
        return self.offer.name

    def assign_message(self) -> wire.Assign:
        assert self.assigned is not None
        return wire.Assign(
            layer_start=self.assigned[0],
            layer_end=self.assigned[1],
            standby=self.standby,
            reason=self.reason,
        )


class OfferBook:
    """Offers by stage name and the placement decisions made on them."""

    def __init__(
        self,
        model: ModelProfile,
        engine_fingerprint: str,
        *,
        kv_tokens: int,
        prefill_weight: float,
        settle_s: float,
    ) -> None:
        self.model = model
        self.engine_fingerprint = engine_fingerprint
        self.kv_tokens = kv_tokens
        self.prefill_weight = prefill_weight
        self.settle_s = settle_s
        self.offers: dict[str, OfferRecord] = {}
        self.last_new = 0.0
        self.last_plan: Placement | None = None
        self.waiting_for = "no stage has offered yet"

    # ------------------------------------------------------------ intake

    def offer(self, identity: bytes, offer: wire.Offer, now: float) -> OfferRecord:
        """Record an offer (new or repeated); RegistryError says what to fix."""
        if offer.num_layers != self.model.num_layers:
            raise RegistryError(
                f"{offer.name} offers for a model with {offer.num_layers} layers, the "
                f"coordinator's has {self.model.num_layers}; start both with the same --model"
            )
        if offer.engine_fingerprint != self.engine_fingerprint:
            raise RegistryError(
                f"{offer.name} runs with [{offer.engine_fingerprint}], the coordinator with "
                f"[{self.engine_fingerprint}]; give every service the same LAYERBUS_* engine "
                "settings"
            )
        record = self.offers.get(offer.name)
        if record is None or record.offer.pid != offer.pid or record.registered:
            # A new stage, or the same name from a new process: a fresh offer.
            record = OfferRecord(identity, offer, first_seen=now, last_seen=now)
            self.offers[offer.name] = record
            self.last_new = now
            self.waiting_for = f"offers settling (planning {self.settle_s:g} s after the last)"
        record.identity, record.offer, record.last_seen = identity, offer, now
        return record

    def registered(self, identity: bytes, info: wire.Register, now: float) -> OfferRecord | None:
        """A placed stage loaded its range and registered: it no longer offers.

        A placed stage this book holds no offer of was placed by an earlier coordinator
        (this one restarted since): its Register carries the offer it measured, adopted
        here as registered at its range, so a re-plan may move it as the earlier
        coordinator would have. Returns the adopted record (None if nothing was adopted);
        RegistryError if the carried offer is not this stage's.
        """
        record = self.offers.get(info.name)
        if record is not None and record.offer.pid == info.pid:
            record.registered = True
            record.assigned = (info.layer_start, info.layer_end)
            return None
        if not info.placed or info.offer is None:
            return None  # pinned (--layers), or a stage too old to send its offer
        self._check_carried(info, info.offer)
        adopted = OfferRecord(
            identity,
            info.offer,
            first_seen=now,
            last_seen=now,
            assigned=(info.layer_start, info.layer_end),
            reason="placed before this coordinator started",
            registered=True,
        )
        self.offers[info.name] = adopted
        return adopted

    def _check_carried(self, info: wire.Register, offer: wire.Offer) -> None:
        """The offer a Register carries must be the registering stage's own, for this model."""
        if offer.name != info.name or offer.pid != info.pid:
            raise RegistryError(
                f"{info.name} (pid {info.pid}) registered with the offer of {offer.name!r} "
                f"(pid {offer.pid}); a stage may only carry its own offer"
            )
        if offer.num_layers != self.model.num_layers or offer.engine_fingerprint != (
            self.engine_fingerprint
        ):
            raise RegistryError(
                f"{info.name} carries an offer for another model or engine settings; start "
                "every service with the same --model and LAYERBUS_* engine settings"
            )

    def expire(self, now: float, timeout: float) -> list[OfferRecord]:
        """Drop offers silent for longer than timeout that never registered.

        A stage loading its layers gets LOADING_GRACE x timeout (at least 30 s): its offer
        beacon is a thread beside the load, which may hold the interpreter for a while.
        """
        loading = max(timeout * LOADING_GRACE, 30.0)
        gone = [
            r
            for r in self.offers.values()
            if not r.registered
            and now - r.last_seen > (loading if r.assigned is not None else timeout)
        ]
        for record in gone:
            del self.offers[record.name]
        return gone

    def forget(self, name: str) -> None:
        self.offers.pop(name, None)

    # ------------------------------------------------------------ decisions

    def capacity(self, name: str, pinned: tuple[int, int] | None = None) -> StageCapacity:
        """The planner's view of an offering (or placed) stage."""
        o = self.offers[name].offer
        return StageCapacity(
            name=name,
            memory_bytes=o.memory_bytes,
            decode_s=o.decode_s,
            prefill_s=o.prefill_s,
            link_s=o.link_s or 0.0,
            pinned=pinned,
            head_s=o.head_s,
        )

    def _registered(
        self, record: StageRecord, pinned: tuple[int, int] | None
    ) -> StageCapacity:
        """A registered stage: its measured offer if placed (free unless `pinned`), else a
        pinned stage's unmeasured view."""
        offer = self.offers.get(record.name)
        if offer is not None and offer.registered:
            return self.capacity(record.name, pinned=pinned)
        return self._unmeasured(record)

    def _unmeasured(self, record: StageRecord) -> StageCapacity:
        """A pinned stage (--layers): its range as given, its speed the offers' median."""
        speeds = [r.offer for r in self.offers.values()]
        decode = statistics.median([o.decode_s for o in speeds]) if speeds else UNMEASURED_S
        prefill = statistics.median([o.prefill_s for o in speeds]) if speeds else UNMEASURED_S
        return StageCapacity(
            name=record.name,
            memory_bytes=1 << 62,
            decode_s=decode,
            prefill_s=prefill,
            pinned=record.layers,
        )

    def waiting(self) -> list[OfferRecord]:
        return [r for r in self.offers.values() if r.assigned is None]

    def decide(self, now: float, registry: Registry) -> list[OfferRecord]:
        """Ranges for the offers waiting, once they settled; the records given one now.

        Live registered stages and assigned stages still loading keep their ranges.
        If the layers are covered, each waiting offer becomes a standby; otherwise
        the waiting offers fill the gaps, or (no plan exists) `waiting_for` says what
        is missing and nothing is assigned.
        """
        waiting = self.waiting()
        if not waiting:
            return []
        if now - self.last_new < self.settle_s:
            self.waiting_for = f"offers settling ({len(waiting)} new)"
            return []
        fixed = self._fixed(registry)
        if _covers(self.model.num_layers, [c.pinned for c in fixed if c.pinned]):
            for record in waiting:
                self._make_standby(record, fixed)
            return [r for r in waiting if r.assigned is not None]
        stages = fixed + [self.capacity(r.name) for r in waiting]
        try:
            placement = plan(
                self.model, stages, kv_tokens=self.kv_tokens, prefill_weight=self.prefill_weight
            )
        except PlacementError as e:
            self.waiting_for = str(e)
            return []
        self.last_plan = placement
        by_name = {r.name: r for r in waiting}
        given = []
        for a in placement.chain:
            chosen = by_name.pop(a.stage) if a.stage in by_name else None
            if chosen is not None:
                chosen.assigned = (a.start, a.end)
                chosen.reason = (
                    f"planned layers {a.start}:{a.end}, predicted {a.step_s * 1000:.2f} ms a "
                    f"step (slowest stage {placement.bottleneck}, "
                    f"{placement.step_s * 1000:.2f} ms)"
                )
                given.append(chosen)
        fixed_now = self._fixed(registry)
        self.waiting_for = ""
        for record in by_name.values():
            self._make_standby(record, fixed_now)
            if record.assigned is not None:
                given.append(record)
        return given

    def replan(self, registry: Registry, now: float) -> list[OfferRecord]:
        """A new split over the live stages after a loss no standby covers.

        Pinned stages keep their ranges; placed stages and waiting offers are placed
        afresh. Returns the stages whose range changes (each must reload: it gets
        wire.Assign); PlacementError when the live stages cannot hold the model.
        """
        return self.commit(self.plan_live(registry), now)

    def plan_live(self, registry: Registry) -> Placement:
        """The best split over the live stages and waiting offers (nothing assigned)."""
        live = {r.name: r for r in registry.stages.values() if r.state != "dead"}
        stages = [self._registered(stage, pinned=None) for stage in live.values()]
        stages += [self.capacity(r.name) for r in self.waiting() if r.name not in live]
        return plan(
            self.model, stages, kv_tokens=self.kv_tokens, prefill_weight=self.prefill_weight
        )

    def predicted_step_s(self, chain: list[StageRecord]) -> float:
        """The slowest predicted step of a running chain, from the stages' capacities."""
        costs = StageCosts(self.model, self.kv_tokens, self.prefill_weight)
        last = self.model.num_layers
        times = []
        for record in chain:
            stage = self._registered(record, pinned=None)
            a, b = record.layers
            times.append(costs.time(stage, b - a, b == last))
        return max(times)

    def commit(self, placement: Placement, now: float) -> list[OfferRecord]:
        """Adopt a split: the placed stages whose range changes (each must reload)."""
        self.last_plan = placement
        moved = []
        for a in placement.chain:
            record = self.offers.get(a.stage)
            if record is None:
                continue
            if record.assigned == (a.start, a.end) and record.registered:
                record.standby = False  # a standby of this range serves it now
                continue
            record.assigned, record.standby, record.registered = (a.start, a.end), False, False
            record.last_seen = now  # reloading from now on: it gets a loading stage's grace
            record.reason = (
                f"re-planned: layers {a.start}:{a.end}, predicted {a.step_s * 1000:.2f} ms a step"
            )
            moved.append(record)
        return moved

    def _fixed(self, registry: Registry) -> list[StageCapacity]:
        """Ranges that stay: live registered stages, then assigned offers still loading."""
        fixed: list[StageCapacity] = []
        seen: set[str] = set()
        for record in registry.stages.values():
            if record.state == "dead":
                continue
            seen.add(record.name)
            fixed.append(self._registered(record, pinned=record.layers))
        for offer in self.offers.values():
            if offer.assigned is not None and offer.name not in seen and not offer.standby:
                fixed.append(self.capacity(offer.name, pinned=offer.assigned))
        return fixed

    def _make_standby(self, record: OfferRecord, fixed: list[StageCapacity]) -> None:
        """Standby for the slowest covered range it can hold that has no standby yet."""
        costs = StageCosts(self.model, self.kv_tokens, self.prefill_weight)
        me = self.capacity(record.name)
        taken = {r.assigned for r in self.offers.values() if r.standby and r is not record}
        last = self.model.num_layers

        def fits(span: tuple[int, int]) -> bool:
            a, b = span
            return costs.memory(b - a, a == 0, b == last) <= me.memory_bytes

        ranges = sorted({c.pinned for c in fixed if c.pinned is not None})
        ranked = sorted(
            ranges,
            key=lambda span: -max(
                costs.time(c, span[1] - span[0], span[1] == last)
                for c in fixed
                if c.pinned == span
            ),
        )
        choice = next((s for s in ranked if fits(s) and s not in taken), None)
        choice = choice or next((s for s in ranked if fits(s)), None)
        if choice is None:
            self.waiting_for = (
                f"{record.name} offers {me.memory_bytes / (1 << 30):.2f} GiB, too little for "
                "any range of the chain; it waits until a re-plan can use it"
            )
            return
        record.assigned, record.standby = choice, True
        record.reason = f"standby for layers {choice[0]}:{choice[1]} (the slowest it can hold)"


def _covers(num_layers: int, ranges: list[tuple[int, int] | None]) -> bool:
    """True if the ranges hold every layer (overlaps allowed: standbys)."""
    held = [False] * num_layers
    for span in ranges:
        if span is not None:
            for layer in range(*span):
                held[layer] = True
    return all(held)
