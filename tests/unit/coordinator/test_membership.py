"""Stage membership: when the engine starts, standbys, restarts, silence and leaving."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from services.coordinator.authorization import LOCAL
from services.coordinator.membership import Membership
from services.coordinator.registry import Registry, StageRecord
from shared import wire

FP = "dtype=float32"


def register(name: str, start: int, end: int, pid: int = 1, fp: str = FP) -> wire.Register:
    return wire.Register(
        name=name,
        layer_start=start,
        layer_end=end,
        num_layers=30,
        data_address=f"tcp://127.0.0.1:{7000 + start}",
        kv_cache_specs=b"",
        available_kv_bytes=1,
        kv_cache_layouts=[],
        engine_fingerprint=fp,
        pid=pid,
    )


@dataclass
class Link:
    """The pipeline as membership sees it: records what it was asked to do."""

    chain: list[Any] = field(default_factory=list)
    broken: str | None = None
    generation: int = 7
    wants_chain: bool = False
    kv_configs: dict[tuple[int, int], Any] = field(default_factory=dict)
    offers: list[list[Any]] = field(default_factory=list)
    replies: list[wire.Configured] = field(default_factory=list)

    def break_chain(self, reason: str) -> None:
        self.broken = reason

    def offer(self, chain: list[Any]) -> None:
        self.offers.append(list(chain))

    def configured(self, reply: wire.Configured) -> None:
        self.replies.append(reply)


class Cluster:
    """A Membership over a real registry, a fake link and recorded sends and starts."""

    def __init__(self) -> None:
        self.registry = Registry(30, FP)
        self.link = Link()
        self.sent: list[tuple[bytes, msgspec.Struct]] = []
        self.started: list[list[StageRecord]] = []
        self.members = Membership(
            self.registry, self.link, lambda i, m: self.sent.append((i, m)), self.start
        )

    def start(self, chain: list[StageRecord]) -> None:
        self.started.append(chain)
        self.link.chain = list(chain)  # as the engine attaches it

    def join(self, name: str, start: int, end: int, pid: int = 1, now: float = 0.0) -> None:
        self.members.on_register(name.encode(), register(name, start, end, pid), LOCAL, now)

    def beat(self, name: str, pid: int = 1, now: float = 0.0) -> None:
        msg = wire.Heartbeat(name=name, seq=1, pid=pid, steps=4)
        self.members.on_heartbeat(name.encode(), msg, LOCAL, now)

    def sent_types(self) -> list[str]:
        return [type(m).__name__ for _, m in self.sent]


def serving(*ranges: tuple[str, int, int]) -> Cluster:
    cluster = Cluster()
    for name, start, end in ranges:
        cluster.join(name, start, end)
    assert len(cluster.started) == 1
    cluster.sent.clear()
    return cluster


def test_the_engine_starts_once_when_every_layer_is_covered() -> None:
    cluster = Cluster()
    cluster.join("b", 15, 30)
    assert cluster.started == [] and not cluster.members.started
    cluster.join("a", 0, 15)
    assert [[r.name for r in chain] for chain in cluster.started] == [["a", "b"]]
    assert cluster.members.started
    cluster.members.maybe_start()
    assert len(cluster.started) == 1, "the engine was started twice"
    assert cluster.sent == [], "stages of the first chain are configured, not Reset"


def test_waiting_names_the_layers_not_covered(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster()
    cluster.join("a", 0, 10)
    with caplog.at_level(logging.INFO, logger="layerbus.coordinator"):
        cluster.members.maybe_start(announce=True)
    assert "layers 10:30 not covered yet" in caplog.text
    assert cluster.started == []


def test_a_repeated_registration_only_refreshes_the_stage() -> None:
    cluster = serving(("a", 0, 30))
    record = cluster.registry.stages["a"]
    cluster.members.on_register(b"a-again", register("a", 0, 30), LOCAL, 5.0)
    assert cluster.registry.stages["a"] is record
    assert (record.last_seen, record.identity) == (5.0, b"a-again")
    assert cluster.sent == [] and cluster.link.broken is None


def test_a_refused_registration_is_told_to_shut_down_without_the_fingerprint() -> None:
    cluster = Cluster()
    cluster.members.on_register(b"x", register("x", 0, 30, fp="dtype=bfloat16"), LOCAL, 0.0)
    assert "x" not in cluster.registry.stages and cluster.started == []
    [(identity, msg)] = cluster.sent
    assert identity == b"x" and isinstance(msg, wire.Shutdown)
    assert "dtype=bfloat16" in msg.reason and FP not in msg.reason


def test_a_stage_joining_a_serving_coordinator_is_reset_to_a_standby() -> None:
    cluster = serving(("a", 0, 30))
    cluster.join("spare", 0, 30)
    assert cluster.sent == [(b"spare", wire.Reset(generation=7))]
    assert cluster.link.offers == [] and len(cluster.started) == 1


def test_a_standby_is_offered_when_the_engine_waits_for_a_chain() -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    cluster.link.kv_configs = {(0, 15): None, (15, 30): None}
    cluster.members.on_leave(b"b", wire.Leave(name="b", pid=1, reason="SIGTERM"), LOCAL, 1.0)
    assert cluster.link.broken == "stage b (layers 15:30) left (SIGTERM)"
    cluster.link.wants_chain = True
    cluster.join("c", 15, 30)
    [offer] = cluster.link.offers
    assert [r.name for r in offer] == ["a", "c"]


def test_the_offer_keeps_the_layer_ranges_of_the_kv_cache() -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    cluster.link.kv_configs = {(0, 15): None, (15, 30): None}
    cluster.registry.mark_dead("b")
    cluster.join("whole", 0, 30)  # covers the model, but not with the cache's ranges
    cluster.members.offer_chain()
    assert cluster.link.offers == []
    cluster.join("c", 15, 30)
    cluster.members.offer_chain()
    assert [r.name for r in cluster.link.offers[-1]] == ["a", "c"]


def test_a_restarted_chain_stage_breaks_the_chain() -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    old = cluster.registry.stages["b"]
    cluster.join("b", 15, 30, pid=2, now=3.0)
    assert cluster.link.broken == "stage b (layers 15:30) was restarted"
    assert old.state == "dead" and cluster.registry.stages["b"] is not old
    assert cluster.sent == [(b"b", wire.Reset(generation=7))]


def test_a_silent_chain_stage_is_lost_and_a_silent_standby_is_not_a_loss() -> None:
    cluster = serving(("a", 0, 30))
    cluster.join("spare", 0, 30, now=10.0)
    cluster.members.expire(now=12.0, timeout=5.0)
    assert cluster.link.broken == "stage a (layers 0:30) stopped responding"
    assert cluster.registry.stages["a"].state == "dead"
    cluster.link.broken = None
    cluster.link.chain = []
    cluster.members.expire(now=20.0, timeout=5.0)
    assert cluster.registry.stages["spare"].state == "dead" and cluster.link.broken is None


def test_the_coordinators_heartbeat_goes_to_live_stages_only() -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    cluster.registry.mark_dead("b")
    cluster.members.beat(now=42.7)
    assert cluster.sent == [(b"a", wire.Heartbeat(name="coordinator", seq=42))]


def test_a_heartbeat_keeps_the_stages_counters() -> None:
    cluster = serving(("a", 0, 30))
    cluster.beat("a", now=4.0)
    record = cluster.registry.stages["a"]
    assert record.beat is not None and record.beat.steps == 4
    assert (record.beat_at, record.last_seen) == (4.0, 4.0)


def test_a_heartbeat_from_another_process_is_ignored() -> None:
    cluster = serving(("a", 0, 30))
    cluster.beat("a", pid=99, now=4.0)
    record = cluster.registry.stages["a"]
    assert record.beat is None and record.last_seen == 0.0


def test_a_stage_presumed_dead_that_beats_again_waits_as_a_standby() -> None:
    cluster = serving(("a", 0, 30))
    cluster.join("spare", 0, 30)
    cluster.sent.clear()
    cluster.registry.mark_dead("spare")
    cluster.beat("spare", now=5.0)
    assert cluster.registry.stages["spare"].state != "dead"
    assert cluster.sent == [(b"spare", wire.Reset(generation=7))]


def test_a_chain_stage_back_before_the_chain_broke_is_not_reset() -> None:
    cluster = serving(("a", 0, 30))
    cluster.registry.mark_dead("a")  # presumed dead, but the chain was not broken yet
    cluster.beat("a", now=5.0)
    assert cluster.sent == [] and cluster.registry.stages["a"].state != "dead"
    cluster.registry.mark_dead("a")
    cluster.link.broken = "stage a stopped responding"  # now the engine rebuilds without it
    cluster.beat("a", now=6.0)
    assert cluster.sent == [(b"a", wire.Reset(generation=7))]


def test_configured_counts_only_from_the_stage_it_names() -> None:
    cluster = serving(("a", 0, 30))
    reply = wire.Configured(name="a", num_blocks=64)
    cluster.members.on_configured(b"b", reply, LOCAL, 3.0)
    assert cluster.link.replies == [] and cluster.registry.stages["a"].last_seen == 0.0
    cluster.members.on_configured(b"a", reply, LOCAL, 3.0)
    assert cluster.link.replies == [reply] and cluster.registry.stages["a"].last_seen == 3.0


def test_leave_from_another_process_is_ignored() -> None:
    cluster = serving(("a", 0, 30))
    cluster.members.on_leave(b"a", wire.Leave(name="a", pid=5, reason="x"), LOCAL, 1.0)
    assert cluster.registry.stages["a"].state != "dead" and cluster.link.broken is None


def test_a_configured_stage_announcing_what_it_holds_is_not_a_restart() -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    record = cluster.registry.stages["a"]
    holds = msgspec.structs.replace(register("a", 0, 15), available_kv_bytes=0)
    cluster.members.on_register(b"a", holds, LOCAL, 5.0)  # this coordinator paused
    assert cluster.registry.stages["a"] is record and record.info.available_kv_bytes == 0
    assert cluster.link.broken is None and cluster.sent == []


def test_a_stage_dead_at_the_first_configure_is_dropped_and_a_standby_serves() -> None:
    cluster = Cluster()
    for name, start, end in (("a", 0, 15), ("b", 15, 30), ("b2", 15, 30)):
        cluster.join(name, start, end)
    assert [r.name for r in cluster.started[0]] == ["a", "b"]
    cluster.registry.mark_dead("b")  # it died while the engine configured the chain
    cluster.members.start_failed(cluster.started[0], None, "b could not configure")
    assert [[r.name for r in c] for c in cluster.started] == [["a", "b"], ["a", "b2"]]
    assert cluster.members.started


def test_without_a_replacement_the_coordinator_waits_and_says_what_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = serving(("a", 0, 15), ("b", 15, 30))
    cluster.registry.mark_dead("b")
    with caplog.at_level(logging.INFO, logger="layerbus.coordinator"):
        cluster.members.start_failed(cluster.started[0], None, "b stopped responding")
    assert not cluster.members.started and len(cluster.started) == 1
    assert "dropping b[15:30]" in caplog.text and "layers 15:30 not covered yet" in caplog.text
    cluster.join("c", 15, 30, now=9.0)
    assert [r.name for r in cluster.started[-1]] == ["a", "c"]


def test_a_stage_that_refused_its_configure_stays_out_until_it_restarts() -> None:
    cluster = Cluster()
    for name, start, end in (("a", 0, 15), ("b", 15, 30)):
        cluster.join(name, start, end)
    cluster.members.start_failed(cluster.started[0], "b", "b could not configure: no memory")
    assert cluster.registry.stages["b"].state == "dead" and not cluster.members.started
    cluster.beat("b", now=1.0)  # alive, but it refused: not a standby again
    cluster.join("b", 15, 30, now=2.0)  # its registrations repeat: ignored
    assert cluster.registry.stages["b"].state == "dead" and len(cluster.started) == 1
    cluster.join("b", 15, 30, pid=2, now=3.0)  # restarted: a new process
    assert [r.name for r in cluster.started[-1]] == ["a", "b"]
    assert cluster.registry.stages["b"].info.pid == 2
