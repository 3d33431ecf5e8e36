"""What each benchmarked system runs: vllm serve flags, layerbus processes and devices."""

from __future__ import annotations

import json

from benchmark.gpu_systems import (
    BenchEngine,
    LayerbusSystem,
    VllmSystem,
    layerbus_plan,
    systems_for,
    vllm_command,
)


def engine(platform: str = "cuda") -> BenchEngine:
    return BenchEngine(model="/m/llama3-8b", platform=platform)  # type: ignore[arg-type]


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_one_gpu_compares_vllm_defaults_one_stage_and_two_sharing_it() -> None:
    systems = systems_for("cuda", 1, 0.4)
    assert [s.name for s in systems] == [
        "vllm-default",
        "vllm-stage-runner",
        "layerbus-1",
        "layerbus-1-uncompiled",
        "layerbus-1-mega-aot",
        "layerbus-2-shared",
    ]
    assert [s.name for s in systems if s.on_request] == ["layerbus-1-mega-aot"]
    one, shared = systems[2], systems[5]
    assert isinstance(one, LayerbusSystem) and isinstance(shared, LayerbusSystem)
    assert one.devices == ("cuda:0",) and one.gpu_memory_utilization is None
    assert shared.devices == ("cuda:0", "cuda:0") and shared.gpu_memory_utilization == 0.4


def test_several_gpus_add_one_stage_per_gpu_and_vllm_pp_and_tp() -> None:
    systems = {s.name: s for s in systems_for("cuda", 2, 0.4)}
    spread = systems["layerbus-2-gpus"]
    assert isinstance(spread, LayerbusSystem) and spread.devices == ("cuda:0", "cuda:1")
    pp, tp = systems["vllm-pp2"], systems["vllm-tp2"]
    assert isinstance(pp, VllmSystem) and isinstance(tp, VllmSystem)
    assert flag(vllm_command(engine(), pp, 1), "--pipeline-parallel-size") == "2"
    assert flag(vllm_command(engine(), tp, 1), "--tensor-parallel-size") == "2"
    assert "--tensor-parallel-size" not in vllm_command(engine(), pp, 1)


def test_vllm_serve_gets_the_shared_engine_flags_and_otherwise_its_defaults() -> None:
    cmd = vllm_command(engine(), VllmSystem("vllm-default", "v"), 8001)
    assert cmd[cmd.index("serve") + 1] == "/m/llama3-8b"
    assert flag(cmd, "--load-format") == "dummy"
    assert (flag(cmd, "--max-num-seqs"), flag(cmd, "--max-num-batched-tokens")) == ("128", "2048")
    assert flag(cmd, "--max-model-len") == "2048" and flag(cmd, "--port") == "8001"
    for default in (
        "--gpu-memory-utilization",
        "--dtype",
        "--enforce-eager",
        "--compilation-config",
    ):
        assert default not in cmd
    cpu = vllm_command(engine("cpu"), VllmSystem("vllm-default", "v"), 8001)
    assert flag(cpu, "--kv-cache-memory-bytes") == str(1 << 28)


def test_layerbus_plan_splits_layers_and_pins_each_stage_to_its_device() -> None:
    system = LayerbusSystem("layerbus-2-shared", "x", ("cuda:0", "cuda:0"), 0.4)
    plan = layerbus_plan(engine(), system, 32, [5000, 8000, 6000, 6001])
    names = [c.name for c in plan.children]
    assert names == ["coordinator", "stage-0-16", "stage-16-32", "gateway"]
    for stage in plan.children[1:3]:
        assert flag(stage.args, "--device") == "cuda:0"
        assert flag(stage.args, "--gpu-memory-utilization") == "0.4"
        assert flag(stage.args, "--coordinator") == "tcp://127.0.0.1:5000"
        assert "--kv-cache-gb" not in stage.args  # sized by vLLM's profiler on a GPU
    gateway = plan.children[-1].args
    assert flag(gateway, "--port") == "8000" and plan.port == 8000
    assert flag(gateway, "--served-model-name") == "bench"
    assert plan.env["LAYERBUS_LOAD_FORMAT"] == "dummy"
    assert plan.env["LAYERBUS_MAX_NUM_BATCHED_TOKENS"] == "2048"
    assert plan.env["LAYERBUS_MODEL"] == "/m/llama3-8b"


def test_cpu_stages_get_no_device_and_a_fixed_kv_cache() -> None:
    system = systems_for("cpu", 1, 0.4)[1]
    assert isinstance(system, LayerbusSystem)
    plan = layerbus_plan(engine("cpu"), system, 4, [1, 2, 3])
    stage = plan.children[1].args
    assert "--device" not in stage and flag(stage, "--kv-cache-gb") == "0.25"
    assert plan.env["LAYERBUS_STAGE_THREADS"] == "1"


def test_the_gap_is_split_by_vllm_with_a_stages_runner_and_a_compiled_stage() -> None:
    systems = {s.name: s for s in systems_for("cuda", 1, 0.4)}
    runner = systems["vllm-stage-runner"]
    assert isinstance(runner, VllmSystem)
    cmd = vllm_command(engine(), runner, 1)
    assert json.loads(flag(cmd, "--compilation-config") or "") == {
        "mode": 0,
        "cudagraph_mode": "FULL_DECODE_ONLY",
    }
    assert dict(runner.env) == {"VLLM_USE_V2_MODEL_RUNNER": "0"}
    uncompiled = systems["layerbus-1-uncompiled"]
    assert isinstance(uncompiled, LayerbusSystem)
    plan = layerbus_plan(engine(), uncompiled, 32, [5000, 8000, 6000])
    assert plan.env["LAYERBUS_TORCH_COMPILE"] == "0"
    # CPU hosts (the smoke run) keep the three systems.
    assert [s.name for s in systems_for("cpu", 1, 0.4)] == [
        "vllm-default",
        "layerbus-1",
        "layerbus-2-shared",
    ]


def test_metrics_ports_go_to_the_coordinator_and_each_stage() -> None:
    system = LayerbusSystem("layerbus-2-shared", "x", ("cuda:0", "cuda:0"), 0.4)
    plan = layerbus_plan(engine(), system, 32, [5000, 8000, 6000, 6001], [9000, 9001, 9002])
    ports = [flag(c.args, "--metrics-port") for c in plan.children]
    assert ports == ["9000", "9001", "9002", None]
    off = layerbus_plan(engine(), system, 32, [5000, 8000, 6000, 6001])
    assert all("--metrics-port" not in c.args for c in off.children)
    assert off.env["LAYERBUS_METRICS_PORT"] == "0"
