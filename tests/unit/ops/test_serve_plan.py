"""`layerbus serve` planning: flag routing, child commands, core bindings."""

from __future__ import annotations

import pytest

from services.coordinator.settings import CoordinatorSettings
from services.gateway.settings import GatewaySettings
from services.ops.launcher import ServeSettings
from services.ops.serve_plan import (
    ServeFlagError,
    ServePlan,
    core_bindings,
    plan_children,
    route_flags,
)
from services.stage.settings import StageSettings
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings

CHILDREN = {
    "coordinator": [CoordinatorSettings, EngineSettings, TransportSettings],
    "stage": [StageSettings, EngineSettings, TransportSettings],
    "gateway": [GatewaySettings],
}
OWN = [ServeSettings, EngineSettings]


def test_engine_flags_reach_coordinator_and_every_stage() -> None:
    routed = route_flags({"dtype": "bfloat16", "max_model_len": "1024"}, OWN, CHILDREN)
    assert routed.own == {"dtype": "bfloat16", "max_model_len": "1024"}
    for child in ("coordinator", "stage"):
        assert routed.children[child] == {"dtype": "bfloat16", "max_model_len": "1024"}
    assert routed.children["gateway"] == {}


def test_transport_flags_reach_every_child() -> None:
    routed = route_flags({"heartbeat_interval_s": "0.5"}, OWN, CHILDREN)
    assert all(f == {"heartbeat_interval_s": "0.5"} for f in routed.children.values())


def test_launcher_owned_flags_are_not_forwarded() -> None:
    with pytest.raises(ServeFlagError, match="--layers"):
        route_flags({"layers": "0:5"}, OWN, CHILDREN)
    routed = route_flags({"port": "9000", "kv_cache_gb": "0.25"}, OWN, CHILDREN)
    assert routed.own == {"port": "9000", "kv_cache_gb": "0.25"}
    assert "port" not in routed.children["gateway"]
    assert routed.children["stage"] == {"kv_cache_gb": "0.25"}


def test_metrics_advertise_is_per_process_and_never_forwarded_by_serve() -> None:
    with pytest.raises(ServeFlagError, match="--metrics-advertise"):
        route_flags({"metrics_advertise": "h:9100"}, OWN, CHILDREN)


def test_bad_forwarded_value_names_the_child() -> None:
    with pytest.raises(ServeFlagError, match="coordinator"):
        route_flags({"step_timeout_s": "soon"}, OWN, CHILDREN)


def plan(**kw: object) -> ServePlan:
    base: dict[str, object] = dict(
        model="/m",
        ranges=[(0, 15), (15, 30)],
        coordinator_address="tcp://127.0.0.1:5555",
        host="127.0.0.1",
        port=8000,
        kv_cache_gb=0.5,
        cpus=[0, 1],
    )
    base.update(kw)
    return ServePlan(**base)  # type: ignore[arg-type]


def test_children_in_start_order_with_forwarded_flags() -> None:
    forwarded = {"coordinator": {"dtype": "bfloat16"}, "stage": {"dtype": "bfloat16"}}
    children = plan_children(plan(), forwarded, set())
    assert [c.name for c in children] == ["coordinator", "stage-0-15", "stage-15-30", "gateway"]
    assert "--dtype=bfloat16" in children[0].args
    assert children[1].args[:3] == ["stage", "--layers=0:15", "--name=stage-0-15"]
    assert "--dtype=bfloat16" in children[2].args
    assert "--kv-cache-gb=0.5" in children[2].args
    assert not any("dtype" in a for a in children[3].args)


def test_standby_gets_its_own_name_and_cores() -> None:
    children = plan_children(plan(standby=True, cpus=[0, 1, 2, 3]), {}, set())
    stages = [c for c in children if c.args[0] == "stage"]
    assert [c.name for c in stages] == [
        "stage-0-15",
        "stage-15-30",
        "stage-0-15-standby",
        "stage-15-30-standby",
    ]
    assert [c.cpus for c in stages] == [(0,), (1,), (2,), (3,)]
    assert len({c.name for c in stages}) == 4
    # No --bind: each stage binds port 0, so every one gets its own port.
    assert not any(a.startswith("--bind") for c in stages for a in c.args)


def test_metrics_ports_are_distinct_where_the_services_have_them() -> None:
    children = plan_children(plan(metrics_port=9100), {}, {"coordinator", "stage"})
    ports = [a for c in children for a in c.args if a.startswith("--metrics-port")]
    assert ports == ["--metrics-port=9100", "--metrics-port=9101", "--metrics-port=9102"]
    off = plan_children(plan(metrics_port=0), {}, {"stage"})
    assert [a for c in off for a in c.args if a.startswith("--metrics")] == ["--metrics-port=0"] * 2


def test_core_bindings() -> None:
    assert core_bindings([0, 1, 2, 3], 2) == [(0, 1), (2, 3)]
    assert core_bindings([0, 1], 4) == [(0,), (1,), (0,), (1,)]
    assert core_bindings([5, 7, 9], 2) == [(5,), (7,)]
    assert core_bindings([], 2) == [(), ()]


def test_load_format_reaches_coordinator_and_every_stage_command() -> None:
    routed = route_flags({"load_format": "dummy"}, OWN, CHILDREN)
    plan = ServePlan(
        model="/m",
        ranges=[(0, 15), (15, 30)],
        coordinator_address="tcp://127.0.0.1:5555",
        host="127.0.0.1",
        port=8000,
        kv_cache_gb=0.5,
    )
    children = plan_children(plan, routed.children, set())
    by_name = {child.name: child.args for child in children}
    for name in ("coordinator", "stage-0-15", "stage-15-30"):
        assert "--load-format=dummy" in by_name[name]
    assert not any(a.startswith("--load-format") for a in by_name["gateway"])
