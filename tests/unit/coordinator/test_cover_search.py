"""Both cover searches (unpinned stages only; subsets beside pinned ranges) agree."""

from __future__ import annotations

import random

from services.coordinator.cover_search import CoverSearch
from services.coordinator.placement_costs import ModelProfile, StageCapacity, StageCosts

MODEL = ModelProfile(9, 10, 0, 15, 20, False, head_layers=1.5)


def test_the_unpinned_search_finds_what_the_subset_search_finds() -> None:
    # Without pinned ranges the subset search is exact but slow; the fast one must agree
    # on whether a cover exists and on how few stages it takes, at every bound.
    rng = random.Random(3)
    costs = StageCosts(MODEL, 0, 0.5)
    agreed = 0
    for _ in range(200):
        free = [
            StageCapacity(
                f"s{i}",
                memory_bytes=rng.choice([20, 35, 50, 80, 200]),
                decode_s=rng.choice([1.0, 2.0]),
                prefill_s=rng.choice([1.0, 3.0]),
                link_s=rng.choice([0.0, 1.0]),
            )
            for i in range(rng.randint(1, 5))
        ]
        search = CoverSearch(MODEL.num_layers, costs, free, [])
        bound = rng.choice([4.0, 8.0, 12.0, 20.0, float("inf")])
        caps = [
            {(f, la): costs.cap(s, bound, f, la) for f in (False, True) for la in (False, True)}
            for s in free
        ]
        fast, exact = search._unpinned(caps), search._subsets(caps)
        assert (fast is None) == (exact is None)
        if fast is not None and exact is not None:
            assert len(fast) == len(exact)
            assert fast[0][1] == 0 and fast[-1][2] == MODEL.num_layers
            assert all(a[2] == b[1] for a, b in zip(fast, fast[1:], strict=False))
            for j, (i, p, q) in enumerate(fast):
                assert 0 < q - p <= caps[i][j == 0, j == len(fast) - 1]
            agreed += 1
    assert agreed >= 50  # enough covers found to mean something


def test_the_search_reports_how_far_the_stages_reach() -> None:
    costs = StageCosts(MODEL, 0, 0.0)
    # 50 bytes hold 3 layers beside the embeddings (15) or the head (20), 5 in the middle:
    # a first and b last hold 6 of the 9 layers; a first and b in the middle reach 8.
    free = [StageCapacity("a", 50, 1.0, 1.0), StageCapacity("b", 50, 1.0, 1.0)]
    search = CoverSearch(MODEL.num_layers, costs, free, [])
    assert search.run(float("inf")) is None
    assert search.furthest == 8
    assert "no placement covers layers 8:9" in search.shortfall(MODEL, 0)
