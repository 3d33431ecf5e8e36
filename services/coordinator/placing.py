"""Placement at work: answer offers, assign ranges, re-plan when a lost range has no standby.

Pure logic over the offer book (offers.py), the registry and the pipeline's chain; the
coordinator's I/O thread hands it Offer messages and calls tick() with the heartbeat.
A re-plan happens when the engine wants a chain and the live stages hold no chain of
the running ranges: the moved stages reload (wire.Assign), and the chain of the
planned ranges is offered to the engine once they registered; the engine sizes its KV
cache configs (kv_resplit.py: the engine's block count, fewer when a moved stage's
memory holds fewer for its new range). A rebalance takes the same path on purpose
when a placed standby makes a better split worth a reload (rebalance.py decides): the
moved stages reload and the chain is broken with the reason. Before the engine runs, a
stage lost during the first configure leaves a gap: the plan is made again over the
live stages (replan_to_start), and the engine starts once the planned ranges registered.
"""

from __future__ import annotations

import logging
import time

from services.coordinator.authorization import Principal
from services.coordinator.membership import Chain, Send
from services.coordinator.model_profile import profile_from_folder
from services.coordinator.offers import OfferBook, OfferRecord
from services.coordinator.placement import Placement, PlacementError
from services.coordinator.rebalance import RebalancePolicy
from services.coordinator.registry import Registry, RegistryError, StageRecord
from services.coordinator.security import refusal_for_peer
from services.coordinator.settings import CoordinatorSettings
from services.stage.capacity import prefill_weight
from shared import wire
from shared.engine_settings import EngineSettings

log = logging.getLogger("layerbus.coordinator")

Range = tuple[int, int]


def placement_book(
    settings: CoordinatorSettings, engine: EngineSettings, model: str, registry: Registry
) -> OfferBook:
    """The offer book of this coordinator's model: sizes at the engine's dtype, KV cache
    for one sequence of max_model_len on each layer, prompts as long as outputs."""
    return OfferBook(
        profile_from_folder(model, engine.platform_choice().dtype),
        registry.engine_fingerprint,
        kv_tokens=engine.max_model_len,
        prefill_weight=prefill_weight(1.0),
        settle_s=settings.placement_settle_s,
    )


def placing_for(
    settings: CoordinatorSettings,
    engine: EngineSettings,
    model: str,
    registry: Registry,
    link: Chain,
    send: Send,
) -> Placing:
    """The coordinator's placement, from its settings."""
    return Placing(
        placement_book(settings, engine, model, registry),
        registry,
        link,
        send,
        RebalancePolicy(settings.rebalance_min_gain, settings.rebalance_interval_s),
    )


class Placing:
    """Offers, assignments and re-plans; coordinator I/O thread."""

    def __init__(
        self,
        book: OfferBook,
        registry: Registry,
        link: Chain,
        send: Send,
        policy: RebalancePolicy | None = None,
    ) -> None:
        self.book = book
        self.policy = policy or RebalancePolicy(min_gain=0.2, interval_s=600.0)
        self.generation = -1  # the chain generation last seen (its change restarts the wait)
        self.changed_at = time.monotonic()
        self.rebalance_note = ""
        self.registry = registry
        self.link = link
        self.send = send
        self.start_replan = False  # a stage was lost before the engine started
        self.planned: list[Range] | None = None  # ranges of a re-plan awaiting its stages
        self.replan_started = 0.0
        self.replan_reported = -1.0  # replan_started of the last "chain ready" line
        self.last_split: list[Range] = []  # the ranges of the last split sent out
        self.replan_error = ""

    # ------------------------------------------------------------ messages

    def on_offer(self, identity: bytes, msg: wire.Offer, who: Principal, now: float) -> None:
        """A stage without a range offers (or repeats) its capacity; answer at once."""
        try:
            record = self.book.offer(identity, msg, now)
        except RegistryError as err:
            log.error("refused stage offer: %s", err)
            reason = refusal_for_peer(str(err), self.registry.engine_fingerprint)
            self.send(identity, wire.Shutdown(reason=reason))
            return
        if record.assigned is not None:
            self.send(identity, record.assign_message())
        else:
            self.send(identity, wire.OfferSeen(echo=msg.sent_at, why=self.book.waiting_for))

    def on_register(self, identity: bytes, msg: wire.Register, now: float) -> None:
        """A placed stage registered its range (placed by this coordinator or, before a
        restart, by an earlier one: then its Register carries the offer to adopt)."""
        if not msg.placed:
            return
        try:
            adopted = self.book.registered(identity, msg, now)
        except RegistryError as err:
            log.error("ignoring the offer in a registration (the stage counts as pinned): %s", err)
            return
        if adopted is not None:
            log.info(
                "placement: %s was placed before this coordinator started; it serves layers "
                "%d:%d and a re-plan may move it",
                msg.name,
                msg.layer_start,
                msg.layer_end,
            )

    def waiting(self) -> str:
        """What placement waits for, for the coordinator's progress line ("" if nothing)."""
        offers = self.book.offers.values()
        if not offers:
            return ""
        waiting = [r for r in offers if r.assigned is None]
        loading = [r for r in offers if r.assigned is not None and not r.registered]
        parts = []
        if loading:
            parts.append(f"{len(loading)} placed stage(s) loading their layers")
        if waiting:
            parts.append(f"{len(waiting)} offer(s) waiting: {self.book.waiting_for}")
        return "; ".join(parts)

    def detail(self, line: str) -> str:
        """The coordinator's detail line with what placement waits for, if anything."""
        waiting = self.waiting()
        return f"{line}; placement: {waiting}" if waiting else line

    def annotate(self, status: wire.Status) -> wire.Status:
        """Add each placed stage's capacity and the plan's predicted step time (/status)."""
        plan = self.book.last_plan
        predicted = {a.stage: a.step_s for a in plan.chain} if plan is not None else {}
        for stage in status.stages:
            record = self.book.offers.get(stage.name)
            if record is None:
                continue
            stage.placed = True
            stage.device = record.offer.device
            stage.memory_gb = round(record.offer.memory_bytes / (1 << 30), 3)
            stage.layer_decode_ms = round(record.offer.decode_s * 1000, 4)
            stage.predicted_step_ms = round(predicted.get(stage.name, 0.0) * 1000, 3)
        return status

    # ------------------------------------------------------------ ticks

    def tick(self, now: float, timeout: float) -> None:
        """Drop silent offers; assign ranges to offers that settled."""
        for gone in self.book.expire(now, timeout):
            held = f" (assigned {gone.assigned[0]}:{gone.assigned[1]})" if gone.assigned else ""
            log.warning(
                "stage %s stopped offering before it registered%s; planning without it",
                gone.name,
                held,
            )
        for record in self.book.decide(now, self.registry):
            self._assign(record, record.identity)
        if self.link.generation != self.generation:
            self.generation, self.changed_at = self.link.generation, now
        self._maybe_rebalance(now)

    def _maybe_rebalance(self, now: float) -> None:
        """Move stages onto a better split when a standby makes it worth a reload."""
        chain = list(self.link.chain)
        if not chain or self.planned is not None or self.link.broken is not None:
            return
        in_chain = {id(r) for r in chain}
        standbys = [
            r
            for r in self.registry.stages.values()
            if r.state != "dead" and id(r) not in in_chain
            and r.name in self.book.offers and self.book.offers[r.name].registered
        ]
        if not standbys:
            return
        try:
            better = self.book.plan_live(self.registry)
        except PlacementError:
            return
        current_s = self.book.predicted_step_s(chain)
        why_not = self.policy.verdict(now, self.changed_at, current_s, better.step_s)
        if why_not:
            if why_not.split(";")[0] != self.rebalance_note.split(";")[0]:
                log.info("not rebalancing: %s", why_not)
            self.rebalance_note = why_not
            return
        reason = self.policy.reason(current_s, better.step_s)
        log.warning("%s", reason)
        self.rebalance_note = ""
        self._move(self.book.commit(better, now), better)
        self.link.break_chain(reason)

    def chain_for_engine(self) -> list[StageRecord] | None:
        """The engine wants a chain and none of the running ranges exists: re-plan.

        Returns the chain of the planned ranges once all its stages registered (the engine
        sizes their KV cache), else None (still loading, or no plan).
        """
        if self.planned is None and not self._replan():
            return None
        assert self.planned is not None
        chain = self.registry.chain(ranges=self.planned)
        if chain is None:
            return None
        if self.replan_reported != self.replan_started:
            self.replan_reported = self.replan_started
            log.warning(
                "re-planned chain ready %.1f s after the re-plan: %s",
                time.monotonic() - self.replan_started,
                " -> ".join(f"{r.name}[{r.layers[0]}:{r.layers[1]}]" for r in chain),
            )
        self.planned = None
        return chain

    def stage_lost_before_start(self, name: str) -> None:
        """A stage died or refused during the first configure: plan again without it."""
        self.book.forget(name)
        self.start_replan = True

    def replan_to_start(self) -> None:
        """No chain to start the engine on after a stage was lost: re-plan over the live
        stages (placed ones move and reload) unless planned stages are still loading; the
        engine starts once live stages cover every layer."""
        if not self.start_replan:
            return
        if any(r.assigned is not None and not r.registered for r in self.book.offers.values()):
            return  # the stages of the last plan are loading their ranges
        self._replan()

    def engine_starts(self) -> None:
        """The engine starts on a chain: a start re-plan, if any, is done."""
        self.start_replan = False
        self.planned = None

    def _replan(self) -> bool:
        if not any(r.registered for r in self.book.offers.values()):
            return False  # only pinned stages: wait for a standby, as before
        try:
            moved = self.book.replan(self.registry, time.monotonic())
        except PlacementError as err:
            if str(err) != self.replan_error:
                log.error("cannot re-plan over the live stages: %s", err)
                self.replan_error = str(err)
            return False
        placement = self.book.last_plan
        assert placement is not None
        self.replan_error = ""
        split = [(a.start, a.end) for a in placement.chain]
        if not moved and split == self.last_split:
            # The same split again, nothing to reload (the engine refused its chain, e.g. a
            # stage's KV cache too small): offer it again without repeating the log.
            self.planned = split
            return True
        log.warning("no standby holds the lost layers; re-planned over the live stages")
        self._move(moved, placement)
        return True

    def _move(self, moved: list[OfferRecord], placement: Placement) -> None:
        """Send each moved stage its new range; the chain waits for the planned ranges."""
        self.planned = [(a.start, a.end) for a in placement.chain]
        self.last_split = list(self.planned)
        self.replan_started = time.monotonic()
        log.warning(
            "new split: %s (predicted %.2f ms a step); %d stage(s) reload",
            ", ".join(f"{a.stage}[{a.start}:{a.end}]" for a in placement.chain),
            placement.step_s * 1000,
            len(moved),
        )
        for record in moved:
            stage = self.registry.stages.get(record.name)
            identity = stage.identity if stage is not None else record.identity
            # It reloads: its registered range is gone, so no chain may use it.
            self.registry.mark_dead(record.name)
            self._assign(record, identity)

    def _assign(self, record: OfferRecord, identity: bytes) -> None:
        assert record.assigned is not None
        log.info(
            "placement: %s %s layers %d:%d: %s",
            record.name,
            "waits as a standby for" if record.standby else "serves",
            *record.assigned,
            record.reason,
        )
        self.send(identity, record.assign_message())
