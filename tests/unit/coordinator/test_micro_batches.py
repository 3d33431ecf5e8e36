"""MicroBatches: turns, fair admission, rebalancing (pure logic)."""

from __future__ import annotations

import pytest

from services.coordinator.micro_batches import MicroBatches


def test_turns_rotate_and_skip_groups_in_flight() -> None:
    mb = MicroBatches(3)
    first = mb.next_group()
    mb.started(first)
    second = mb.next_group()
    mb.started(second)
    assert (first, second) == (0, 1)
    mb.finished(first)
    third = mb.next_group()
    assert third == 2
    mb.started(third)
    # 1 and 2 are in flight: 0 is next although the rotation points at 0 anyway.
    assert mb.next_group() == 0


def test_group_in_flight_is_never_scheduled_again() -> None:
    mb = MicroBatches(2)
    mb.started(mb.next_group())  # 0 in flight
    assert mb.next_group() == 1
    mb.started(1)
    mb.finished(1)
    assert mb.next_group() == 1  # 0 still in flight


def test_admission_cap_spreads_new_requests() -> None:
    mb = MicroBatches(2)
    # 64 waiting, nothing running: the first group admits half.
    assert mb.admission_cap(0, [], 64, 64) == 32
    mb.assign(0, [f"a{i}" for i in range(32)])
    running = [f"a{i}" for i in range(32)]
    assert mb.admission_cap(1, running, 32, 64) == 32


def test_admission_cap_respects_max_seqs() -> None:
    mb = MicroBatches(2)
    mb.assign(0, [f"a{i}" for i in range(40)])
    running = [f"a{i}" for i in range(40)]
    assert mb.admission_cap(1, running, 100, 64) == 24


def test_heavy_group_hands_surplus_to_lightest() -> None:
    mb = MicroBatches(2)
    mb.assign(0, [f"a{i}" for i in range(10)])
    mb.assign(1, ["b0", "b1"])
    running = [f"a{i}" for i in range(10)] + ["b0", "b1"]
    mine = mb.members(0, running)
    assert len(mine) == 6
    assert mb.sizes(running) == [6, 6]


def test_close_groups_stay_put() -> None:
    mb = MicroBatches(2)
    mb.assign(0, ["a0", "a1", "a2"])
    mb.assign(1, ["b0", "b1"])
    assert mb.members(0, ["a0", "a1", "a2", "b0", "b1"]) == ["a0", "a1", "a2"]


def test_unassigned_running_request_joins_current_group() -> None:
    mb = MicroBatches(2)
    assert mb.members(1, ["x"]) == ["x"]
    assert mb.group_of["x"] == 1


def test_forget_finished_and_reset_flight() -> None:
    mb = MicroBatches(2)
    mb.assign(0, ["a", "b"])
    mb.started(0)
    mb.forget_finished(["a"])
    assert mb.sizes(["a", "b"]) == [1, 0]
    mb.reset_flight()
    assert mb.in_flight == [0, 0]


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatches(0)


def test_grow_adds_empty_groups_that_fill_by_hand_over() -> None:
    mb = MicroBatches(2, capacity=4)
    running = [f"r{i}" for i in range(16)]
    mb.assign(0, running[:8])
    mb.assign(1, running[8:])
    assert mb.sizes(running) == [8, 8]
    mb.grow(4)
    assert mb.sizes(running) == [8, 8, 0, 0]
    # Turns rotate over all four now, and heavy groups hand their surplus over.
    for _ in range(12):
        group = mb.next_group()
        mine = mb.members(group, running)
        mb.assign(group, mine)
    sizes = mb.sizes(running)
    assert sum(sizes) == 16
    assert max(sizes) - min(sizes) <= 1, sizes


def test_grow_only_within_capacity_and_never_shrinks() -> None:
    mb = MicroBatches(2, capacity=3)
    with pytest.raises(ValueError, match="up to 3"):
        mb.grow(4)
    mb.grow(3)
    with pytest.raises(ValueError, match="from 3"):
        mb.grow(2)
    with pytest.raises(ValueError, match="capacity 1 is below"):
        MicroBatches(2, capacity=1)


def test_new_groups_take_turns_after_grow() -> None:
    mb = MicroBatches(2, capacity=3)
    mb.started(mb.next_group())
    mb.started(mb.next_group())
    mb.grow(3)
    assert mb.next_group() == 2
