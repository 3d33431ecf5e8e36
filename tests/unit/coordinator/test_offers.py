"""The offer book: when placement plans, what it assigns, standbys, dead offers."""

from __future__ import annotations

import pytest

from services.coordinator.offers import OfferBook
from services.coordinator.placement import GIB, ModelProfile, PlacementError
from services.coordinator.registry import Registry, RegistryError
from shared import wire

MIB = 1 << 20
MODEL = ModelProfile(
    num_layers=30,
    layer_bytes=100 * MIB,
    kv_bytes_per_token=0,
    embed_bytes=200 * MIB,
    head_bytes=200 * MIB,
    tied_embeddings=True,
    head_layers=0.0,
)
FP = "fp"


def offer(name: str, memory_gb: float = 100.0, speed: float = 1e-3, pid: int = 1) -> wire.Offer:
    return wire.Offer(
        name=name,
        pid=pid,
        num_layers=30,
        engine_fingerprint=FP,
        device="cpu",
        memory_bytes=int(memory_gb * GIB),
        decode_s=speed,
        prefill_s=speed,
    )


def register(
    name: str,
    start: int,
    end: int,
    pid: int = 1,
    placed: bool = True,
    carried: wire.Offer | None = None,
) -> wire.Register:
    return wire.Register(
        name=name,
        layer_start=start,
        layer_end=end,
        num_layers=30,
        data_address="tcp://127.0.0.1:1",
        kv_cache_specs=b"",
        available_kv_bytes=0,
        kv_cache_layouts=[],
        engine_fingerprint=FP,
        pid=pid,
        placed=placed,
        offer=carried,
    )


def book(settle_s: float = 2.0) -> OfferBook:
    return OfferBook(MODEL, FP, kv_tokens=0, prefill_weight=0.0, settle_s=settle_s)


def test_nothing_is_planned_until_the_offers_settle() -> None:
    b, reg = book(), Registry(30, FP)
    b.offer(b"a", offer("a"), now=0.0)
    b.offer(b"b", offer("b"), now=1.0)
    assert b.decide(2.5, reg) == []
    assert "settling" in b.waiting_for
    given = b.decide(3.0, reg)
    assert sorted(r.assigned for r in given if r.assigned) == [(0, 15), (15, 30)]
    assert all(not r.standby for r in given)


def test_a_repeated_offer_does_not_restart_the_wait() -> None:
    b, reg = book(), Registry(30, FP)
    b.offer(b"a", offer("a"), now=0.0)
    b.offer(b"a", offer("a"), now=1.9)
    assert [r.assigned for r in b.decide(2.0, reg)] == [(0, 30)]


def test_a_memory_capped_stage_gets_fewer_layers() -> None:
    b, reg = book(), Registry(30, FP)
    # Layers of 100 MiB: the stage capped at 0.8 GiB holds at most 8 of the 30.
    b.offer(b"a", offer("a"), now=0.0)
    b.offer(b"b", offer("b"), now=0.0)
    b.offer(b"c", offer("c", memory_gb=0.8), now=0.0)
    given = {r.name: r.assigned for r in b.decide(5.0, reg)}
    sizes = {n: s[1] - s[0] for n, s in given.items() if s}
    assert sum(sizes.values()) == 30
    assert sizes["c"] < sizes["a"] and sizes["c"] < sizes["b"]


def test_pinned_stages_keep_their_ranges_and_offers_fill_the_gap() -> None:
    b, reg = book(), Registry(30, FP)
    reg.add(b"p", register("p", 0, 10, placed=False), now=0.0)
    b.offer(b"a", offer("a"), now=0.0)
    b.offer(b"b", offer("b"), now=0.0)
    given = sorted(r.assigned for r in b.decide(5.0, reg) if r.assigned)
    assert given[0][0] == 10 and given[-1][1] == 30 and given[0][1] == given[1][0]


def test_an_offer_once_the_layers_are_covered_becomes_a_standby_of_the_slowest_range() -> None:
    b, reg = book(), Registry(30, FP)
    b.offer(b"fast", offer("fast", speed=1e-3), now=0.0)
    b.offer(b"slow", offer("slow", speed=3e-3), now=0.0)
    for r in b.decide(5.0, reg):
        assert r.assigned is not None
        reg.add(r.identity, register(r.name, *r.assigned), now=5.0)
        b.registered(r.identity, register(r.name, *r.assigned), 5.0)
    # The plan evens the times out: fast holds 23 layers (23 ms a step), slow 7 (21 ms).
    assert reg.stages["fast"].layers == (0, 23)
    b.offer(b"new", offer("new"), now=10.0)
    [given] = b.decide(12.0, reg)
    assert given.standby and given.assigned == (0, 23)
    assert given.assign_message().standby


def test_a_second_standby_takes_another_range() -> None:
    b, reg = book(), Registry(30, FP)
    reg.add(b"x", register("x", 0, 15, placed=False), now=0.0)
    reg.add(b"y", register("y", 15, 30, placed=False), now=0.0)
    b.offer(b"s1", offer("s1"), now=0.0)
    b.offer(b"s2", offer("s2"), now=0.0)
    given = b.decide(5.0, reg)
    assert sorted(r.assigned for r in given if r.assigned) == [(0, 15), (15, 30)]
    assert all(r.standby for r in given)


def test_an_impossible_cover_says_what_is_missing_and_assigns_nothing() -> None:
    b, reg = book(), Registry(30, FP)
    b.offer(b"tiny", offer("tiny", memory_gb=0.5), now=0.0)
    assert b.decide(5.0, reg) == []
    assert "layers" in b.waiting_for and "GiB" in b.waiting_for


def test_a_stage_that_dies_while_loading_is_dropped_and_the_plan_made_again() -> None:
    b, reg = book(), Registry(30, FP)
    b.offer(b"a", offer("a"), now=0.0)
    b.offer(b"b", offer("b"), now=0.0)
    assert len(b.decide(5.0, reg)) == 2
    b.offer(b"a", offer("a"), now=36.0)  # a keeps offering while it loads; b went silent
    assert b.expire(now=29.0, timeout=3.5) == [], "a loading stage gets at least 30 s"
    assert [r.name for r in b.expire(now=39.0, timeout=3.5)] == ["b"]
    # a's range stays fixed while it loads; no offer waits, so nothing new is decided.
    assert b.decide(40.0, reg) == []
    b.forget("a")
    b.offer(b"a", offer("a", pid=2), now=41.0)  # restarted: a fresh offer
    assert [r.assigned for r in b.decide(44.0, reg)] == [(0, 30)]


def test_offers_for_another_model_or_engine_are_refused() -> None:
    b = book()
    wrong = offer("a")
    wrong.num_layers = 12
    with pytest.raises(RegistryError, match="same --model"):
        b.offer(b"a", wrong, now=0.0)
    other = offer("a")
    other.engine_fingerprint = "other"
    with pytest.raises(RegistryError, match="LAYERBUS_"):
        b.offer(b"a", other, now=0.0)


def placed_chain(b: OfferBook, reg: Registry, names: list[str], now: float) -> None:
    for name in names:
        b.offer(name.encode(), offer(name), now=now)
    for r in b.decide(now + 5.0, reg):
        assert r.assigned is not None
        reg.add(r.identity, register(r.name, *r.assigned), now=now + 5.0)
        b.registered(r.identity, register(r.name, *r.assigned), 5.0)


def test_a_lost_stage_without_standby_re_plans_over_the_survivors() -> None:
    b, reg = book(), Registry(30, FP)
    placed_chain(b, reg, ["a", "b", "c"], now=0.0)
    assert sorted(s.layers for s in reg.stages.values()) == [(0, 10), (10, 20), (20, 30)]
    lost = next(n for n, s in reg.stages.items() if s.layers == (10, 20))
    reg.mark_dead(lost)
    moved = b.replan(reg, now=20.0)
    after = {r.name: r.assigned for r in moved}
    survivors = sorted(n for n in reg.stages if n != lost)
    # Both survivors hold 15 layers now, so both reload; the lost stage gets nothing.
    assert sorted(after) == survivors and sorted(after.values()) == [(0, 15), (15, 30)]
    assert all(not r.registered and not r.standby for r in moved)
    assert b.expire(now=25.0, timeout=2.0) == [], "moved stages reload with a loading grace"
    assert "re-planned" in moved[0].assign_message().reason


def test_a_re_plan_keeps_pinned_ranges_and_refuses_what_cannot_fit() -> None:
    b, reg = book(), Registry(30, FP)
    reg.add(b"p", register("p", 0, 10, placed=False), now=0.0)
    placed_chain(b, reg, ["a", "b"], now=0.0)
    lost = next(n for n, s in reg.stages.items() if s.layers[1] == 30)
    reg.mark_dead(lost)
    [moved] = b.replan(reg, now=20.0)
    assert moved.assigned == (10, 30)
    reg.mark_dead("p")
    b.offers[moved.name].offer.memory_bytes = int(0.5 * GIB)
    with pytest.raises(PlacementError, match="layers"):
        b.replan(reg, now=20.0)


def restarted(
    ranges: dict[str, tuple[int, int]], placed: bool = True
) -> tuple[OfferBook, Registry]:
    """A fresh coordinator's book and registry: the stages register again with their
    ranges, each carrying the offer it sent the coordinator before (placed stages)."""
    b, reg = book(), Registry(30, FP)
    for name, (start, end) in ranges.items():
        info = register(name, start, end, placed=placed, carried=offer(name))
        reg.add(name.encode(), info, now=100.0)
        b.registered(name.encode(), info, now=100.0)
    return b, reg


def test_a_restarted_coordinator_adopts_the_offer_a_placed_stage_registers_with() -> None:
    b, reg = restarted({"a": (0, 10), "b": (10, 20), "c": (20, 30)})
    assert sorted(b.offers) == ["a", "b", "c"]
    a = b.offers["a"]
    assert a.registered and not a.standby and a.assigned == (0, 10) and a.identity == b"a"
    assert b.waiting() == [] and b.decide(200.0, reg) == [], "nothing to plan: all registered"
    assert b.expire(now=1e6, timeout=1.0) == [], "registered stages never expire"
    # The planner sees a measured, free stage (not a pinned one at the offers' median).
    assert b.capacity("a").memory_bytes == 100 * GIB and b.capacity("a").pinned is None


def test_after_a_coordinator_restart_a_lost_placed_stage_is_re_planned_over_the_others() -> None:
    b, reg = restarted({"a": (0, 10), "b": (10, 20), "c": (20, 30)})
    reg.mark_dead("b")
    moved = b.replan(reg, now=120.0)
    assert sorted((r.name, r.assigned) for r in moved) == [("a", (0, 15)), ("c", (15, 30))]
    assert all(not r.registered for r in moved)
    assert "re-planned" in moved[0].assign_message().reason


def test_a_pinned_or_older_stage_gives_the_restarted_coordinator_no_offer() -> None:
    b, reg = restarted({"p": (0, 15)}, placed=False)  # --layers: an offer it sent is ignored
    assert b.offers == {}
    older = register("q", 15, 30)  # placed, but from a stage that sends no offer
    reg.add(b"q", older, now=100.0)
    assert b.registered(b"q", older, now=100.0) is None and b.offers == {}
    reg.mark_dead("q")
    with pytest.raises(PlacementError):
        b.replan(reg, now=120.0)  # only the pinned 0:15 is live: no cover


def test_a_register_may_only_carry_its_own_offer_for_this_model() -> None:
    b = book()
    other = register("a", 0, 30, carried=offer("b"))
    with pytest.raises(RegistryError, match="its own offer"):
        b.registered(b"a", other, now=0.0)
    stale = register("a", 0, 30, pid=2, carried=offer("a", pid=1))
    with pytest.raises(RegistryError, match="its own offer"):
        b.registered(b"a", stale, now=0.0)
    foreign = offer("a")
    foreign.engine_fingerprint = "other"
    with pytest.raises(RegistryError, match="LAYERBUS_"):
        b.registered(b"a", register("a", 0, 30, carried=foreign), now=0.0)
    assert b.offers == {}
