"""services/coordinator/metrics.py: stage counts by state and role; the scrape output."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from services.coordinator.metrics import PipelineView, register, stage_counts


def test_stage_counts_have_every_state_and_role() -> None:
    counts = stage_counts([])
    assert set(counts) == {
        (s, r) for s in ("registered", "configured", "dead") for r in ("active", "standby")
    }
    assert sum(counts.values()) == 0


def test_a_dead_chain_stage_is_not_active() -> None:
    counts = stage_counts(
        [("configured", True), ("configured", True), ("configured", False), ("dead", True)]
    )
    assert counts[("configured", "active")] == 2
    assert counts[("configured", "standby")] == 1
    assert counts[("dead", "standby")] == 1
    assert counts[("dead", "active")] == 0


def test_collector_renders_the_view_at_scrape_time() -> None:
    registry = CollectorRegistry()
    state = {"steps": 3}

    def view() -> PipelineView:
        return PipelineView(
            steps=state["steps"],
            empty_steps=1,
            batches_in_flight=2,
            generation=7,
            recoveries=1,
            stages=stage_counts([("configured", True)]),
            micro_batches=3,
        )

    register(view, registry)
    state["steps"] = 5
    text = generate_latest(registry).decode()
    assert "layerbus_coordinator_steps_total 5.0" in text
    assert "layerbus_coordinator_empty_steps_total 1.0" in text
    assert "layerbus_coordinator_batches_in_flight 2.0" in text
    assert "layerbus_coordinator_chain_generation 7.0" in text
    assert "layerbus_coordinator_micro_batches 3.0" in text
    assert "layerbus_coordinator_recoveries_total 1.0" in text
    assert 'layerbus_coordinator_stages{role="active",state="configured"} 1.0' in text


def test_a_second_registration_replaces_the_view() -> None:
    registry = CollectorRegistry()
    base = PipelineView(0, 0, 0, 0, 0, stage_counts([]))
    register(lambda: base, registry)
    register(lambda: PipelineView(9, 0, 0, 0, 0, stage_counts([])), registry)
    assert "layerbus_coordinator_steps_total 9.0" in generate_latest(registry).decode()


def test_registering_does_not_read_the_view() -> None:
    def view() -> PipelineView:
        raise AssertionError("read at registration")

    register(view, CollectorRegistry())
