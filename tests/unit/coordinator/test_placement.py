"""The placement planner: memory limits, speeds, links, pinned ranges, impossible covers."""

from __future__ import annotations

import itertools
import random

import pytest

from services.coordinator.placement import (
    GIB,
    ModelProfile,
    Placement,
    PlacementError,
    StageCapacity,
    plan,
)

# 30 layers of 100 MiB; embeddings and LM head 200 MiB each (tied); no KV unless asked.
MIB = 1 << 20
MODEL = ModelProfile(
    num_layers=30,
    layer_bytes=100 * MIB,
    kv_bytes_per_token=1024,
    embed_bytes=200 * MIB,
    head_bytes=200 * MIB,
    tied_embeddings=True,
    head_layers=0.0,
)
ROOMY = 100 * GIB


def stage(
    name: str,
    memory: int = ROOMY,
    speed: float = 1.0,
    link: float = 0.0,
    pinned: tuple[int, int] | None = None,
    prefill: float | None = None,
) -> StageCapacity:
    return StageCapacity(name, memory, speed, speed if prefill is None else prefill, link, pinned)


def ranges(placement: Placement) -> dict[str, tuple[int, int]]:
    return {a.stage: (a.start, a.end) for a in placement.chain}


def covers_once(placement: Placement, num_layers: int) -> bool:
    position = 0
    for a in placement.chain:
        if a.start != position or a.end <= a.start:
            return False
        position = a.end
    return position == num_layers


def test_equal_stages_get_equal_ranges() -> None:
    placed = plan(MODEL, [stage("a"), stage("b"), stage("c")], kv_tokens=0, prefill_weight=0.0)
    assert covers_once(placed, 30)
    assert sorted(b - a for a, b in ranges(placed).values()) == [10, 10, 10]
    assert placed.standby == ()


def test_uneven_speeds_give_uneven_ranges() -> None:
    # b takes twice as long per layer: it gets half as many layers.
    placed = plan(MODEL, [stage("a"), stage("b", speed=2.0)], kv_tokens=0, prefill_weight=0.0)
    sizes = {name: b - a for name, (a, b) in ranges(placed).items()}
    assert sizes == {"a": 20, "b": 10}
    assert placed.step_s == pytest.approx(20.0)


def test_decode_and_prefill_speeds_are_mixed_by_the_prefill_weight() -> None:
    # a is fast at decode, b at prefill: who gets more depends on the workload.
    stages = [stage("a", speed=1.0, prefill=3.0), stage("b", speed=3.0, prefill=1.0)]
    decode_heavy = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    prefill_heavy = plan(MODEL, stages, kv_tokens=0, prefill_weight=10.0)
    size = {n: b - a for n, (a, b) in ranges(decode_heavy).items()}
    assert size["a"] > size["b"]
    size = {n: b - a for n, (a, b) in ranges(prefill_heavy).items()}
    assert size["b"] > size["a"]


def test_the_lm_head_weighs_on_the_last_stage() -> None:
    model = ModelProfile(30, 100 * MIB, 0, 0, 0, True, head_layers=8.0)
    placed = plan(model, [stage("a"), stage("b")], kv_tokens=0, prefill_weight=0.0)
    chain = placed.chain
    # The last stage runs its layers plus 8 layers' worth of head: (30 + 8) / 2 = 19.
    assert (chain[0].end - chain[0].start, chain[1].end - chain[1].start) == (19, 11)
    assert chain[1].step_s == pytest.approx(19.0)


def test_the_link_counts_in_a_stage_time() -> None:
    placed = plan(MODEL, [stage("near"), stage("far", link=6.0)], kv_tokens=0, prefill_weight=0.0)
    sizes = {name: b - a for name, (a, b) in ranges(placed).items()}
    assert sizes == {"near": 18, "far": 12}
    assert {a.stage: a.step_s for a in placed.chain} == {"near": 18.0, "far": 18.0}


def test_memory_limits_are_respected() -> None:
    # 1 GiB holds 10 layers of 100 MiB, or fewer beside the embeddings or the head.
    small = stage("small", memory=GIB)
    placed = plan(MODEL, [small, stage("big")], kv_tokens=0, prefill_weight=0.0)
    for a in placed.chain:
        assert a.memory_bytes <= a.memory_limit
    sizes = {name: b - a for name, (a, b) in ranges(placed).items()}
    assert sizes["small"] == 8  # 8 x 100 MiB + 200 MiB of embeddings or head
    assert covers_once(placed, 30)


def test_kv_cache_counts_in_memory() -> None:
    # 64k tokens x 1 KiB = 64 MiB of KV per layer: 164 MiB a layer, 6 fit in 1 GiB.
    placed = plan(
        MODEL, [stage("small", memory=GIB), stage("big")], kv_tokens=65536, prefill_weight=0.0
    )
    sizes = {name: b - a for name, (a, b) in ranges(placed).items()}
    assert sizes["small"] == 5  # (1024 MiB - 200 MiB of embeddings or head) // 164 MiB
    assert all(a.memory_bytes <= a.memory_limit for a in placed.chain)


def test_pinned_ranges_are_kept() -> None:
    stages = [stage("a", pinned=(0, 4)), stage("b", pinned=(4, 30))]
    placed = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    assert ranges(placed) == {"a": (0, 4), "b": (4, 30)}
    assert all(a.pinned for a in placed.chain)


def test_pinned_and_placed_stages_mix() -> None:
    stages = [stage("x"), stage("p", pinned=(10, 12)), stage("y"), stage("z")]
    placed = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    assert covers_once(placed, 30)
    assert ranges(placed)["p"] == (10, 12)
    assert {a.stage for a in placed.chain} == {"x", "p", "y", "z"}
    # 28 free layers over three stages, one gap of 10 and one of 18: 10 / 9 / 9.
    assert placed.step_s == pytest.approx(10.0)


def test_a_stage_that_does_not_help_is_a_standby() -> None:
    # Everything pinned: the free stage waits.
    stages = [stage("a", pinned=(0, 30)), stage("spare")]
    placed = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    assert ranges(placed) == {"a": (0, 30)}
    assert placed.standby == ("spare",)


def test_a_second_stage_pinned_to_the_same_range_is_a_standby() -> None:
    stages = [
        stage("slow", speed=2.0, pinned=(0, 15)),
        stage("fast", pinned=(0, 15)),
        stage("b", pinned=(15, 30)),
    ]
    placed = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    assert ranges(placed) == {"fast": (0, 15), "b": (15, 30)}
    assert placed.standby == ("slow",)


def test_overlapping_pinned_ranges_are_refused() -> None:
    with pytest.raises(PlacementError, match=r"overlap: a holds 0:10, b holds 5:30"):
        plan(
            MODEL,
            [stage("a", pinned=(0, 10)), stage("b", pinned=(5, 30))],
            kv_tokens=0,
            prefill_weight=0.0,
        )


def test_a_pinned_range_too_big_for_its_stage_is_refused() -> None:
    with pytest.raises(PlacementError, match=r"pinned to layers 0:15, which need 1.66 GiB"):
        plan(
            MODEL,
            [stage("a", memory=GIB, pinned=(0, 15)), stage("b")],
            kv_tokens=0,
            prefill_weight=0.0,
        )


def test_an_impossible_cover_names_the_missing_layers_and_memory() -> None:
    # Two stages of 1 GiB: 8 layers beside the embeddings, then 10 more: 18 of 30.
    stages = [stage("a", memory=GIB), stage("b", memory=GIB)]
    with pytest.raises(PlacementError) as err:
        plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    text = str(err.value)
    assert "layers 18:30" in text
    assert "1.37 GiB" in text  # 12 x 100 MiB + 200 MiB of LM head, for one more stage
    assert "memory cap" in text


def test_a_gap_no_free_stage_fills_is_refused() -> None:
    with pytest.raises(PlacementError, match=r"no placement covers layers 10:30"):
        plan(MODEL, [stage("a", pinned=(0, 10))], kv_tokens=0, prefill_weight=0.0)


def test_repeated_names_are_refused() -> None:
    with pytest.raises(PlacementError, match="repeated: a"):
        plan(MODEL, [stage("a"), stage("a")], kv_tokens=0, prefill_weight=0.0)


def test_a_pinned_range_outside_the_model_is_refused() -> None:
    with pytest.raises(PlacementError, match="outside the model's 30 layers"):
        plan(MODEL, [stage("a", pinned=(0, 31))], kv_tokens=0, prefill_weight=0.0)


def test_equal_stages_match_the_balanced_split_of_the_benchmark() -> None:
    from services.stage.layers import balanced_split

    for layers, stages, head in [(30, 2, 4.0), (30, 3, 4.0), (30, 4, 8.0), (24, 3, 0.0)]:
        model = ModelProfile(layers, MIB, 0, 0, 0, True, head_layers=head)
        placed = plan(model, [stage(f"s{i}") for i in range(stages)], kv_tokens=0, prefill_weight=0)
        split = balanced_split(layers, stages, head)
        worst = max(b - a + (head if b == layers else 0.0) for a, b in split)
        assert placed.step_s == pytest.approx(worst)


def brute_force(model: ModelProfile, stages: list[StageCapacity], weight: float) -> float:
    """The least possible slowest-stage time over every order, subset and split.

    Pinned stages must all be in the chain, each at its own range.
    """
    from services.coordinator.placement_costs import StageCosts

    costs = StageCosts(model, 0, weight)
    n_layers, best = model.num_layers, float("inf")
    pinned = {s.name for s in stages if s.pinned is not None}
    for k in range(1, len(stages) + 1):
        for order in itertools.permutations(stages, k):
            if not pinned <= {s.name for s in order}:
                continue
            for cuts in itertools.combinations(range(1, n_layers), k - 1):
                bounds = [0, *cuts, n_layers]
                worst = 0.0
                for j, s in enumerate(order):
                    a, b = bounds[j], bounds[j + 1]
                    if s.pinned is not None and s.pinned != (a, b):
                        worst = float("inf")
                        break
                    last = b == n_layers
                    if costs.memory(b - a, a == 0, last) > s.memory_bytes:
                        worst = float("inf")
                        break
                    worst = max(worst, costs.time(s, b - a, last))
                best = min(best, worst)
    return best


def test_the_plan_is_as_good_as_any_split_on_random_small_cases() -> None:
    rng = random.Random(7)
    model = ModelProfile(7, 10, 0, 15, 15, True, head_layers=1.5)
    for _ in range(60):
        stages = [
            StageCapacity(
                f"s{i}",
                memory_bytes=rng.choice([25, 40, 60, 200]),
                decode_s=rng.choice([1.0, 1.5, 3.0]),
                prefill_s=rng.choice([1.0, 2.0]),
                link_s=rng.choice([0.0, 0.5, 2.0]),
            )
            for i in range(rng.randint(1, 4))
        ]
        expected = brute_force(model, stages, 0.25)
        if expected == float("inf"):
            with pytest.raises(PlacementError):
                plan(model, stages, kv_tokens=0, prefill_weight=0.25)
            continue
        placed = plan(model, stages, kv_tokens=0, prefill_weight=0.25)
        assert covers_once(placed, 7)
        assert all(a.memory_bytes <= a.memory_limit for a in placed.chain)
        assert placed.step_s == pytest.approx(expected)


def test_pinned_and_placed_plans_are_as_good_as_any_split_on_random_small_cases() -> None:
    rng = random.Random(11)
    model = ModelProfile(7, 10, 0, 15, 15, True, head_layers=1.5)
    checked = 0
    for _ in range(80):
        a = rng.randint(0, 6)
        b = rng.randint(a + 1, 7)
        stages = [
            StageCapacity("p", 200, rng.choice([1.0, 2.0]), 1.0, 0.0, pinned=(a, b)),
            *(
                StageCapacity(
                    f"s{i}",
                    memory_bytes=rng.choice([25, 40, 60, 200]),
                    decode_s=rng.choice([1.0, 1.5, 3.0]),
                    prefill_s=1.0,
                    link_s=rng.choice([0.0, 0.5]),
                )
                for i in range(rng.randint(0, 3))
            ),
        ]
        expected = brute_force(model, stages, 0.25)
        if expected == float("inf"):
            with pytest.raises(PlacementError):
                plan(model, stages, kv_tokens=0, prefill_weight=0.25)
            continue
        placed = plan(model, stages, kv_tokens=0, prefill_weight=0.25)
        assert ranges(placed)["p"] == (a, b)
        assert covers_once(placed, 7)
        assert placed.step_s == pytest.approx(expected)
        checked += 1
    assert checked >= 20  # enough feasible cases to mean something


def test_many_unpinned_stages_are_planned_without_the_subset_search() -> None:
    stages = [stage(f"s{i:02}", speed=1.0 + i / 10) for i in range(40)]
    placed = plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
    assert covers_once(placed, 30)
    assert len(placed.chain) + len(placed.standby) == 40


def test_too_many_unpinned_stages_beside_pinned_ones_are_refused() -> None:
    stages = [stage("p", pinned=(0, 2)), *(stage(f"s{i}") for i in range(13))]
    with pytest.raises(PlacementError, match="at most 12 stages without --layers, got 13"):
        plan(MODEL, stages, kv_tokens=0, prefill_weight=0.0)
