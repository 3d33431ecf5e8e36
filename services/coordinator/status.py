"""The coordinator's answer to StatusQuery (the gateway's /status), built without sockets.

The I/O thread hands in what it sees (registry records, the pipeline's chain, the
engine's snapshot) and gets a wire.Status back (status_reply); nothing here blocks or
changes state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.coordinator.registry import StageRecord
from shared import wire


class EngineView(Protocol):
    """What /status reads of the engine host (services.coordinator.engine.EngineHost)."""

    ready: threading.Event
    error: str | None
    state: str
    max_model_len: int
    snapshot: dict[str, Any]


class LinkView(Protocol):
    """What /status reads of the pipeline (services.coordinator.pipeline.PipelineLink)."""

    chain: list[Any]
    failure: str | None
    broken: str | None

    def in_flight(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class Served:
    """What the coordinator serves, fixed for its lifetime; an immutable value."""

    model: str
    num_layers: int
    incarnation: str
    metrics: str  # the coordinator's exporter URL ("" = metrics off)


def stage_status(record: StageRecord, active: bool, now: float) -> wire.StageStatus:
    """One stage as /status lists it: registration, liveness, role and work counters."""
    beat = record.beat or wire.Heartbeat(name=record.name, seq=0)
    info = record.info
    return wire.StageStatus(
        name=record.name,
        address=info.data_address,
        layer_start=info.layer_start,
        layer_end=info.layer_end,
        state=record.state,
        last_heartbeat_age_s=round(now - record.last_seen, 3),
        layers_loaded=info.layers_loaded,
        other_parameters=info.other_parameters,
        role="active" if active and record.state != "dead" else "standby",
        pid=info.pid,
        steps=beat.steps,
        busy_s=beat.busy_s,
        recent_step_ms=beat.recent_step_ms,
        num_requests=beat.num_requests,
        metrics=info.metrics,
        dtype=info.dtype,
        max_model_len=info.max_model_len,
    )


def stage_statuses(
    records: Iterable[StageRecord], chain: Sequence[StageRecord], now: float
) -> list[wire.StageStatus]:
    """Every registered stage by layer range then name; those in `chain` are active."""
    active = {id(r) for r in chain}
    ordered = sorted(records, key=lambda r: (r.layers, r.name))
    return [stage_status(r, id(r) in active, now) for r in ordered]


def readiness(
    host: EngineView | None, link_failure: str | None, link_broken: str | None, waiting: str
) -> tuple[bool, str]:
    """Whether the engine takes requests, and the detail line that says why (not).

    waiting: the I/O thread's own line while no engine runs ("waiting for stages").
    """
    ready = bool(
        host is not None
        and host.ready.is_set()
        and host.error is None
        and link_failure is None
        and host.state == "serving"
    )
    if host is not None and host.error:
        return ready, host.error
    if link_failure:
        return ready, link_failure
    if host is not None and host.state == "recovering":
        return ready, f"recovering: {link_broken or 'rebuilding the chain'}"
    if host is not None and host.state == "serving":
        return ready, "serving"
    return ready, waiting


def coordinator_status(
    nonce: int,
    served: Served,
    stages: list[wire.StageStatus],
    readiness: tuple[bool, str],
    max_model_len: int,
    dtype: str,
    engine: dict[str, Any],
) -> wire.Status:
    """The Status reply; `engine` holds the engine's counters (its snapshot) by field name."""
    ready, detail = readiness
    return wire.Status(
        nonce=nonce,
        ready=ready,
        model=served.model,
        max_model_len=max_model_len,
        num_layers=served.num_layers,
        stages=stages,
        detail=detail,
        incarnation=served.incarnation,
        metrics=served.metrics,
        dtype=dtype,
        **engine,
    )


def status_reply(
    nonce: int,
    served: Served,
    records: Iterable[StageRecord],
    host: EngineView | None,
    link: LinkView,
    *,
    waiting: str,
    dtype: str,
    max_model_len: int,
    now: float,
) -> wire.Status:
    """The Status reply from what the I/O thread holds now.

    host: the engine, None before it starts (no stage is active then); waiting: the I/O
    thread's detail line while no engine runs; max_model_len: the settings' value,
    reported until the engine has its own.
    """
    engine = dict(host.snapshot) if host is not None else {}
    if engine:
        # Live, not as of the engine's last step: steps that carry tokens in flight now.
        engine["batches_in_flight"] = link.in_flight()[1]
    chain = link.chain if host is not None else []
    return coordinator_status(
        nonce,
        served,
        stage_statuses(records, chain, now),
        readiness(host, link.failure, link.broken, waiting),
        host.max_model_len if host is not None else max_model_len,
        dtype,
        engine,
    )
