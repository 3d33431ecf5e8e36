"""The coordinator's pipeline metrics (`layerbus_coordinator_*`), read at scrape time.

Nothing is updated on the engine or I/O thread: a Collector reads the
PipelineLink counters, the engine's recoveries and the registry when
Prometheus scrapes (on prometheus_client's HTTP thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

STATES = ("registered", "configured", "dead")
ROLES = ("active", "standby")


def stage_counts(
    stages: Iterable[tuple[str, bool]],
) -> dict[tuple[str, str], int]:
    """(state, in current chain) per stage -> count by (state, role); every pair present.

    role is "active" for a live stage of the current chain, else "standby"
    (as in /status).
    """
    counts = {(state, role): 0 for state in STATES for role in ROLES}
    for state, in_chain in stages:
        role = "active" if in_chain and state != "dead" else "standby"
        counts[(state, role)] = counts.get((state, role), 0) + 1
    return counts


@dataclass
class PipelineView:
    """What one scrape reports; built by CoordinatorCollector.view (any thread)."""

    steps: int
    empty_steps: int
    batches_in_flight: int
    generation: int
    recoveries: int
    stages: dict[tuple[str, str], int]
    micro_batches: int = 0  # M now (it grows while serving unless fixed)
    last_recovery_s: float = 0.0


class CoordinatorCollector(Collector):
    """Renders a PipelineView as metric families; runs on the scrape thread."""

    def __init__(self, view: Callable[[], PipelineView]) -> None:
        self.view = view

    def describe(self) -> Iterator[Any]:
        """The families with zero values: registering never calls the view."""
        return self._families(PipelineView(0, 0, 0, 0, 0, {}))

    def collect(self) -> Iterator[Any]:
        return self._families(self.view())

    def _families(self, v: PipelineView) -> Iterator[Any]:
        yield CounterMetricFamily(
            "layerbus_coordinator_steps", "Steps sent down the chain", value=v.steps
        )
        yield CounterMetricFamily(
            "layerbus_coordinator_empty_steps",
            "Steps with no scheduled tokens (they carry finished/preempted requests)",
            value=v.empty_steps,
        )
        yield GaugeMetricFamily(
            "layerbus_coordinator_batches_in_flight",
            "Steps carrying tokens that are in the chain now (micro-batches in flight)",
            value=v.batches_in_flight,
        )
        yield GaugeMetricFamily(
            "layerbus_coordinator_micro_batches",
            "Micro-batches taking turns through the chain now (M; raised on slow links)",
            value=v.micro_batches,
        )
        yield GaugeMetricFamily(
            "layerbus_coordinator_chain_generation",
            "Generation of the current chain (changes on every rebuild)",
            value=v.generation,
        )
        yield CounterMetricFamily(
            "layerbus_coordinator_recoveries",
            "Chain rebuilds after a stage of the chain was lost",
            value=v.recoveries,
        )
        yield GaugeMetricFamily(
            "layerbus_coordinator_last_recovery_seconds",
            "From the chain breaking (a stage lost) to serving again, at the last rebuild "
            "(a standby taking over, or a re-plan with reloads)",
            value=v.last_recovery_s,
        )
        stages = GaugeMetricFamily(
            "layerbus_coordinator_stages",
            "Registered stages by state and role (active = in the current chain)",
            labels=["state", "role"],
        )
        for (state, role), count in sorted(v.stages.items()):
            stages.add_metric([state, role], count)
        yield stages


_registered: dict[int, CoordinatorCollector] = {}


def register(view: Callable[[], PipelineView], registry: CollectorRegistry = REGISTRY) -> None:
    """Serve the coordinator's pipeline metrics from registry (the --metrics-port one).

    A second coordinator in the same process (tests) takes over the collector.
    """
    collector = _registered.get(id(registry))
    if collector is None:
        collector = _registered[id(registry)] = CoordinatorCollector(view)
        registry.register(collector)
    collector.view = view


def view_of(server: Any) -> PipelineView:
    """The coordinator server's pipeline state now (scrape thread; reads, never writes)."""
    host, link = server.host, server.link
    chain = {id(r) for r in link.chain} if host is not None else set()
    records = list(server.registry.stages.values())
    return PipelineView(
        steps=link.steps_sent,
        empty_steps=link.empty_steps_sent,
        batches_in_flight=link.in_flight()[1],
        generation=link.generation if host is not None else 0,
        recoveries=host.recoveries if host is not None else 0,
        stages=stage_counts((r.state, id(r) in chain) for r in records),
        micro_batches=host.micro_batches if host is not None else 0,
        last_recovery_s=host.last_recovery_s if host is not None else 0.0,
    )
