"""The coordinator's Status reply: stage list, roles, readiness and the detail line."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from services.coordinator.registry import StageRecord
from services.coordinator.status import (
    Served,
    coordinator_status,
    readiness,
    stage_statuses,
    status_reply,
)
from shared import wire


def record(name: str, start: int, end: int, state: str = "configured") -> StageRecord:
    info = wire.Register(
        name=name,
        layer_start=start,
        layer_end=end,
        num_layers=30,
        data_address=f"tcp://127.0.0.1:{6000 + start}",
        kv_cache_specs=b"",
        available_kv_bytes=1,
        kv_cache_layouts=[],
        engine_fingerprint="",
        pid=7,
        metrics="http://127.0.0.1:9101/metrics",
        dtype="float32",
        max_model_len=2048,
    )
    return StageRecord(identity=name.encode(), info=info, last_seen=10.0, state=state)


@dataclass
class Host:
    """An engine host as /status reads it."""

    state: str = "serving"
    error: str | None = None
    max_model_len: int = 1024
    snapshot: dict[str, Any] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.ready.set()


@dataclass
class Link:
    """The pipeline as /status reads it."""

    chain: list[Any] = field(default_factory=list)
    failure: str | None = None
    broken: str | None = None
    busy: int = 0

    def in_flight(self) -> tuple[int, int]:
        return 9, self.busy


SERVED = Served(model="m", num_layers=30, incarnation="abc", metrics="")


def reply_of(host: Host | None, link: Link, records: list[StageRecord]) -> wire.Status:
    return status_reply(
        5,
        SERVED,
        records,
        host,
        link,
        waiting="waiting",
        dtype="float32",
        max_model_len=512,
        now=10.0,
    )


def test_the_stages_are_active_only_once_an_engine_runs_on_the_chain() -> None:
    a = record("a", 0, 30)
    before = reply_of(None, Link(chain=[a]), [a])
    assert [s.role for s in before.stages] == ["standby"]
    assert (before.ready, before.detail, before.max_model_len) == (False, "waiting", 512)
    after = reply_of(Host(max_model_len=1024), Link(chain=[a]), [a])
    assert [s.role for s in after.stages] == ["active"]
    assert (after.ready, after.detail, after.max_model_len) == (True, "serving", 1024)


def test_batches_in_flight_are_read_live_not_from_the_engines_last_step() -> None:
    host = Host(snapshot={"steps": 3, "batches_in_flight": 1})
    reply = reply_of(host, Link(busy=2), [])
    assert (reply.steps, reply.batches_in_flight) == (3, 2)
    assert reply_of(None, Link(busy=2), []).batches_in_flight == 0


def test_stages_are_listed_by_layers_with_their_role_age_and_counters() -> None:
    a, b, standby = record("b", 0, 15), record("a", 15, 30), record("c", 15, 30)
    standby.beat = wire.Heartbeat(name="c", seq=3, steps=5, busy_s=1.5)
    rows = stage_statuses([standby, b, a], chain=[b, a], now=12.5)
    assert [(r.name, r.layer_start, r.role) for r in rows] == [
        ("b", 0, "active"),
        ("a", 15, "active"),
        ("c", 15, "standby"),
    ]
    assert rows[2].steps == 5 and rows[2].busy_s == 1.5 and rows[0].steps == 0
    assert rows[0].last_heartbeat_age_s == 2.5 and rows[0].dtype == "float32"


def test_a_dead_chain_stage_is_no_longer_active() -> None:
    dead = record("a", 0, 30, state="dead")
    assert stage_statuses([dead], chain=[dead], now=10.0)[0].role == "standby"


def test_readiness_and_the_detail_line() -> None:
    assert readiness(None, None, None, "waiting for stages") == (False, "waiting for stages")
    assert readiness(Host(), None, None, "x") == (True, "serving")
    assert readiness(Host(error="engine died"), None, None, "x") == (False, "engine died")
    assert readiness(Host(), "layers 0:15 missing", None, "x") == (False, "layers 0:15 missing")
    recovering = readiness(Host(state="recovering"), None, "stage a left", "x")
    assert recovering == (False, "recovering: stage a left")
    starting = Host(state="starting")
    starting.ready.clear()
    assert readiness(starting, None, None, "starting engine") == (False, "starting engine")


def test_the_reply_carries_identity_readiness_and_engine_counters() -> None:
    served = Served(model="m", num_layers=30, incarnation="abc", metrics="http://x/metrics")
    reply = coordinator_status(
        9, served, [], (True, "serving"), 1024, "float32", {"steps": 4, "micro_batches": 2}
    )
    assert (reply.nonce, reply.ready, reply.detail, reply.model) == (9, True, "serving", "m")
    assert (reply.steps, reply.micro_batches, reply.incarnation) == (4, 2, "abc")
    assert (reply.max_model_len, reply.dtype, reply.metrics) == (
        1024,
        "float32",
        "http://x/metrics",
    )
