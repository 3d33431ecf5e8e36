"""Placement at work in the coordinator: replies to offers, assignments, re-plans (fakes)."""

from __future__ import annotations

from typing import Any

from services.coordinator.authorization import LOCAL
from services.coordinator.offers import OfferBook
from services.coordinator.placing import Placing
from services.coordinator.registry import Registry
from shared import wire
from tests.unit.coordinator.test_offers import FP, MODEL, offer, register


class FakeLink:
    """The pipeline as placement sees it."""

    def __init__(self) -> None:
        self.chain: list[Any] = []
        self.broken: str | None = None
        self.generation = 0
        self.wants_chain = False
        self.kv_configs: dict[tuple[int, int], Any] = {}

    def break_chain(self, reason: str) -> None:
        self.broken = reason

    def offer(self, chain: list[Any]) -> None:
        self.chain = chain

    def configured(self, reply: wire.Configured) -> None:
        return None


def setup() -> tuple[Placing, Registry, list[tuple[bytes, Any]]]:
    registry = Registry(30, FP)
    book = OfferBook(MODEL, FP, kv_tokens=0, prefill_weight=0.0, settle_s=1.0)
    sent: list[tuple[bytes, Any]] = []
    placing = Placing(book, registry, FakeLink(), lambda i, m: sent.append((i, m)))
    return placing, registry, sent


def test_an_offer_is_answered_at_once_and_assigned_once_settled() -> None:
    placing, registry, sent = setup()
    placing.on_offer(b"a#offer", offer("a"), LOCAL, now=0.0)
    assert isinstance(sent[-1][1], wire.OfferSeen) and "settling" in placing.detail("waiting")
    placing.tick(now=2.0, timeout=5.0)
    identity, msg = sent[-1]
    assert identity == b"a#offer" and isinstance(msg, wire.Assign)
    assert (msg.layer_start, msg.layer_end, msg.standby) == (0, 30, False)
    placing.on_offer(b"a#offer", offer("a"), LOCAL, now=2.5)  # the beacon while loading
    assert isinstance(sent[-1][1], wire.Assign)
    assert "loading" in placing.detail("waiting")


def test_an_offer_for_another_model_is_refused_with_a_shutdown() -> None:
    placing, _, sent = setup()
    wrong = offer("a")
    wrong.num_layers = 12
    placing.on_offer(b"a#offer", wrong, LOCAL, now=0.0)
    assert isinstance(sent[-1][1], wire.Shutdown) and "--model" in sent[-1][1].reason


def test_a_lost_range_without_standby_moves_the_survivors_and_waits_for_them() -> None:
    placing, registry, sent = placed_three()
    lost = next(n for n, r in registry.stages.items() if r.layers == (10, 20))
    registry.mark_dead(lost)
    sent.clear()
    assert placing.chain_for_engine() is None  # the survivors reload first
    moved = {i: m for i, m in sent if isinstance(m, wire.Assign)}
    # Sent to the stages' control sockets (they serve), not their offer sockets.
    assert set(moved) == {n.encode() for n in registry.stages if n != lost}
    assert all(registry.stages[i.decode()].state == "dead" for i in moved)
    for identity, msg in moved.items():
        info = register(identity.decode(), msg.layer_start, msg.layer_end, pid=1)
        registry.add(identity, info, now=10.0)
        placing.on_register(identity, info, 3.0)
    chain = placing.chain_for_engine()
    assert chain is not None and [r.layers for r in chain] == [(0, 15), (15, 30)]
    assert placing.planned is None  # offered once; the engine sizes its KV cache (kv_resplit)


def test_status_shows_a_placed_stages_capacity_and_predicted_step() -> None:
    placing, registry, sent = setup()
    placing.on_offer(b"a#offer", offer("a"), LOCAL, now=0.0)
    placing.tick(now=2.0, timeout=5.0)
    status = wire.Status(
        nonce=1,
        ready=True,
        model="m",
        max_model_len=1,
        num_layers=30,
        stages=[
            wire.StageStatus(
                name="a", address="", layer_start=0, layer_end=30, state="configured",
                last_heartbeat_age_s=0.0,
            ),
            wire.StageStatus(
                name="pinned", address="", layer_start=0, layer_end=30, state="configured",
                last_heartbeat_age_s=0.0,
            ),
        ],
    )
    placing.annotate(status)
    a, pinned = status.stages
    assert a.placed and a.device == "cpu" and a.memory_gb == 100.0
    assert a.layer_decode_ms == 1.0 and a.predicted_step_ms == 30.0
    assert not pinned.placed and pinned.predicted_step_ms == 0.0


def placed_cluster(placing: Placing, registry: Registry, sent: list[tuple[bytes, Any]]) -> None:
    """Offers from a and b, assigned and registered; the link's chain is theirs."""
    for name in ("a", "b"):
        placing.on_offer(f"{name}#offer".encode(), offer(name), LOCAL, now=0.0)
    placing.tick(now=2.0, timeout=5.0)
    for identity, msg in list(sent):
        if isinstance(msg, wire.Assign):
            name = identity.decode().removesuffix("#offer")
            info = register(name, msg.layer_start, msg.layer_end)
            registry.add(name.encode(), info, now=3.0)
            placing.on_register(name.encode(), info, 3.0)
    placing.link.chain = sorted(registry.stages.values(), key=lambda r: r.layers)
    sent.clear()


def join_standby(placing: Placing, registry: Registry, now: float) -> None:
    placing.on_offer(b"c#offer", offer("c"), LOCAL, now=now)
    placing.tick(now=now + 2.0, timeout=5.0)
    record = placing.book.offers["c"]
    assert record.standby and record.assigned is not None
    info = register("c", *record.assigned)
    registry.add(b"c", info, now=now + 3.0)
    placing.on_register(b"c", info, 3.0)


def test_a_standby_that_makes_a_better_split_waits_for_the_interval() -> None:
    from services.coordinator.rebalance import RebalancePolicy

    placing, registry, sent = setup()
    placing.policy = RebalancePolicy(min_gain=0.2, interval_s=1000.0)
    placed_cluster(placing, registry, sent)
    join_standby(placing, registry, now=10.0)
    # Three equal stages would cut the step from 15 to 10 layers' time (33%), but the
    # chain changed less than 1000 s ago: no move yet, and the log says why.
    placing.tick(now=20.0, timeout=1e9)
    assert placing.planned is None and placing.link.broken is None
    assert "rebalancing in" in placing.rebalance_note
    sent.clear()
    placing.tick(now=2000.0, timeout=1e9)
    assigns = [(i, m) for i, m in sent if isinstance(m, wire.Assign)]
    moved = {i.decode(): (m.layer_start, m.layer_end) for i, m in assigns}
    # Every stage's range changes (a and b held 15 layers, c a copy of one of them).
    assert sorted(moved) == ["a", "b", "c"]
    assert sorted(moved.values()) == [(0, 10), (10, 20), (20, 30)]
    assert placing.planned == [(0, 10), (10, 20), (20, 30)]
    assert placing.link.broken is not None and "rebalancing" in placing.link.broken


def test_no_rebalance_when_the_gain_is_too_small() -> None:
    from services.coordinator.rebalance import RebalancePolicy

    placing, registry, sent = setup()
    placing.policy = RebalancePolicy(min_gain=0.5, interval_s=0.0)
    placed_cluster(placing, registry, sent)
    join_standby(placing, registry, now=10.0)
    placing.tick(now=2000.0, timeout=1e9)
    assert placing.planned is None and placing.link.broken is None
    assert "below --rebalance-min-gain 50%" in placing.rebalance_note


def placed_three() -> tuple[Placing, Registry, list[tuple[bytes, Any]]]:
    """Three offers placed, loaded and registered; the engine not started yet."""
    placing, registry, sent = setup()
    for name in ("a", "b", "c"):
        placing.on_offer(f"{name}#offer".encode(), offer(name), LOCAL, now=0.0)
    placing.tick(now=2.0, timeout=5.0)
    for identity, msg in list(sent):
        if isinstance(msg, wire.Assign):
            name = identity.decode().removesuffix("#offer")
            info = register(name, msg.layer_start, msg.layer_end)
            registry.add(name.encode(), info, now=3.0)
            placing.on_register(name.encode(), info, 3.0)
    sent.clear()
    return placing, registry, sent


def test_a_stage_lost_at_the_first_configure_is_planned_without() -> None:
    placing, registry, sent = placed_three()
    placing.replan_to_start()
    assert sent == [], "nothing was lost: no re-plan"
    lost = next(n for n, r in registry.stages.items() if r.layers[0] == 0)
    registry.mark_dead(lost)
    placing.stage_lost_before_start(lost)
    placing.replan_to_start()
    moved = {i.decode(): m for i, m in sent if isinstance(m, wire.Assign)}
    assert lost not in moved and lost not in placing.book.offers
    spans = sorted((m.layer_start, m.layer_end) for m in moved.values())
    kept = [r.layers for n, r in registry.stages.items() if n != lost and r.state != "dead"]
    assert sorted(spans + kept)[0][0] == 0 and sum(b - a for a, b in spans + kept) == 30
    sent.clear()
    placing.replan_to_start()
    assert sent == [], "the moved stages are loading: no second plan"
    for name, msg in moved.items():
        info = register(name, msg.layer_start, msg.layer_end, pid=1)
        registry.add(name.encode(), info, now=10.0)
        placing.on_register(name.encode(), info, 3.0)
    chain = registry.chain()
    assert chain is not None and lost not in [r.name for r in chain]
    placing.engine_starts()
    assert placing.planned is None and not placing.start_replan


def test_a_re_planned_chain_the_engine_refused_is_offered_again_without_a_new_split(
    caplog: Any,
) -> None:
    import logging

    placing, registry, sent = placed_three()
    lost = next(n for n, r in registry.stages.items() if r.layers[0] == 0)
    registry.mark_dead(lost)
    placing.chain_for_engine()
    for identity, msg in [(i, m) for i, m in sent if isinstance(m, wire.Assign)]:
        info = register(identity.decode(), msg.layer_start, msg.layer_end, pid=1)
        registry.add(identity, info, now=10.0)
        placing.on_register(identity, info, 3.0)
    first = placing.chain_for_engine()
    assert first is not None
    sent.clear()
    caplog.clear()
    # The engine refused that chain (a stage's KV cache too small) and asks again.
    with caplog.at_level(logging.INFO, logger="layerbus.coordinator"):
        again = placing.chain_for_engine()
    assert again is not None and [r.name for r in again] == [r.name for r in first]
    assert sent == [] and caplog.text == "", "no reload, no repeated log lines"


def test_a_restarted_coordinator_re_plans_over_stages_an_earlier_one_placed() -> None:
    placing, registry, sent = setup()
    # The stages were placed by the coordinator before this one: no Offer reaches this
    # one, only their Register, each carrying the offer it measured.
    for name, span in {"a": (0, 10), "b": (10, 20), "c": (20, 30)}.items():
        info = register(name, *span, carried=offer(name))
        registry.add(name.encode(), info, now=3.0)
        placing.on_register(name.encode(), info, 3.0)
    placing.link.chain = sorted(registry.stages.values(), key=lambda r: r.layers)
    registry.mark_dead("b")
    assert placing.chain_for_engine() is None  # the survivors reload first
    moved = {i: (m.layer_start, m.layer_end) for i, m in sent if isinstance(m, wire.Assign)}
    assert moved == {b"a": (0, 15), b"c": (15, 30)}, "not a wait for a stage of 10:20"
    for identity, span in moved.items():
        info = register(identity.decode(), *span, carried=offer(identity.decode()))
        registry.add(identity, info, now=10.0)
        placing.on_register(identity, info, 10.0)
    chain = placing.chain_for_engine()
    assert chain is not None and [r.name for r in chain] == ["a", "c"]


def test_a_register_carrying_another_stages_offer_counts_as_pinned(caplog: Any) -> None:
    import logging

    placing, registry, sent = setup()
    for name, span in {"a": (0, 15), "b": (15, 30)}.items():
        info = register(name, *span, carried=offer("a"))
        registry.add(name.encode(), info, now=3.0)
        with caplog.at_level(logging.ERROR, logger="layerbus.coordinator"):
            placing.on_register(name.encode(), info, 3.0)
    assert "b (pid 1) registered with the offer of 'a'" in caplog.text
    assert sorted(placing.book.offers) == ["a"]
    registry.mark_dead("a")
    sent.clear()
    assert placing.chain_for_engine() is None
    # b keeps its range: the re-plan cannot move it, so nothing covers 0:15 and no one reloads.
    assert [m for _, m in sent if isinstance(m, wire.Assign)] == []
