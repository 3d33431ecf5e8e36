"""benchmark/step_overhead.py: phase means from two scrapes of /metrics."""

from __future__ import annotations

from benchmark.step_overhead import Phase, phases, scrape, table

BEFORE = """
layerbus_step_phase_seconds_sum{phase="schedule",service="coordinator"} 0.5
layerbus_step_phase_seconds_count{phase="schedule",service="coordinator"} 100.0
layerbus_stage_hop_seconds_sum{layers="0:15",stage="s0"} 0.1
layerbus_stage_hop_seconds_count{layers="0:15",stage="s0"} 10.0
"""
AFTER = """
layerbus_step_phase_seconds_sum{phase="schedule",service="coordinator"} 0.8
layerbus_step_phase_seconds_count{phase="schedule",service="coordinator"} 200.0
layerbus_step_phase_seconds_sum{phase="publish",service="coordinator"} 0.2
layerbus_step_phase_seconds_count{phase="publish",service="coordinator"} 50.0
layerbus_stage_hop_seconds_sum{layers="0:15",stage="s0"} 0.1
layerbus_stage_hop_seconds_count{layers="0:15",stage="s0"} 10.0
other_metric 3
"""


def test_each_phase_is_the_mean_of_what_one_load_added() -> None:
    rows = phases(scrape(BEFORE, "coordinator"), scrape(AFTER, "coordinator"))
    by_phase = {r.phase: r for r in rows}
    assert by_phase["schedule"].count == 100
    assert abs(by_phase["schedule"].mean_ms - 3.0) < 1e-9  # 0.3 s over 100 steps
    assert abs(by_phase["publish"].mean_ms - 4.0) < 1e-9
    assert "hop" not in by_phase  # no new hops during the load


def test_a_stage_hop_is_its_own_phase() -> None:
    after = BEFORE.replace("} 0.1", "} 0.3").replace('stage="s0"} 10.0', 'stage="s0"} 20.0')
    rows = phases(scrape(BEFORE, "s0"), scrape(after, "s0"))
    hop = next(r for r in rows if r.phase == "hop")
    assert hop.count == 10 and abs(hop.mean_ms - 20.0) < 1e-9


def test_table_names_every_row() -> None:
    text = table([Phase("coordinator", "plan", 3, 0.25)])
    assert "| coordinator | plan | 3 | 0.250 |" in text
