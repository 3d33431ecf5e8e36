"""The systems benchmark/gpu_bench.py compares, as commands: vllm serve and layerbus layouts.

Pure planning (which processes, which flags, which environment) apart from `start`, which
runs a plan's processes and waits for them to answer. Every system gets the same engine
flags (model folder, load format, max_model_len, max_num_seqs, max_num_batched_tokens,
seed); vLLM's own flags are otherwise left at their defaults.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmark.processes import Children, child_env, free_port

Platform = Literal["cuda", "cpu"]
GIB = 1 << 30
Env = tuple[tuple[str, str], ...]
# What a stage runs on CUDA (shared/platform_defaults.py), as `vllm serve` flags: vLLM's V1
# model runner, no torch.compile, full CUDA graphs for decode batches; async scheduling on.
STAGE_RUNNER_ARGS = (
    "--compilation-config",
    json.dumps({"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}),
)
STAGE_RUNNER_ENV: Env = (("VLLM_USE_V2_MODEL_RUNNER", "0"),)


@dataclass(frozen=True)
class BenchEngine:
    """Engine flags every system gets; immutable, any thread."""

    model: str
    platform: Platform
    served_name: str = "bench"
    load_format: str = "dummy"
    max_model_len: int = 2048
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 2048
    seed: int = 0
    # CPU only: a fixed KV cache per process (vLLM's CPU worker sizes none itself).
    cpu_kv_cache_gb: float = 0.25

    def layerbus_env(self) -> dict[str, str]:
        """LAYERBUS_* engine settings, the same for the coordinator, every stage and the
        single-process baseline (benchmark/greedy_baseline.py reads them too)."""
        env = {
            "LAYERBUS_MODEL": self.model,
            "LAYERBUS_LOAD_FORMAT": self.load_format,
            "LAYERBUS_MAX_MODEL_LEN": str(self.max_model_len),
            "LAYERBUS_MAX_NUM_SEQS": str(self.max_num_seqs),
            "LAYERBUS_MAX_NUM_BATCHED_TOKENS": str(self.max_num_batched_tokens),
            "LAYERBUS_SEED": str(self.seed),
        }
        if self.platform == "cpu":
            # One torch thread per stage; OpenMP threads not bound (processes share cores).
            env |= {"LAYERBUS_STAGE_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
        return env


@dataclass(frozen=True)
class VllmSystem:
    """`vllm serve` in one process tree, defaults or vLLM's own parallelism over N GPUs."""

    name: str
    label: str
    pipeline_parallel: int = 1
    tensor_parallel: int = 1
    args: tuple[str, ...] = ()  # flags beyond the shared engine flags
    env: Env = ()
    on_request: bool = False  # only when --systems names it

    @property
    def gpus(self) -> int:
        return self.pipeline_parallel * self.tensor_parallel


@dataclass(frozen=True)
class LayerbusSystem:
    """layerbus: a coordinator, one stage per entry of `devices`, a gateway."""

    name: str
    label: str
    devices: tuple[str, ...]  # per stage: "cuda:N", or "" on a CPU host
    gpu_memory_utilization: float | None = None  # per stage; None = the stage's default
    env: Env = ()  # LAYERBUS_* settings beyond the shared engine flags
    on_request: bool = False  # only when --systems names it

    @property
    def stages(self) -> int:
        return len(self.devices)


System = VllmSystem | LayerbusSystem


def systems_for(platform: Platform, gpus: int, shared_util: float) -> list[System]:
    """(a) vllm serve defaults, (b) layerbus 1 stage, (c) 2 stages sharing one device;
    on CUDA also `vllm serve` with an uncompiled stage's runner settings and one stage
    with --no-torch-compile (what compile gives, and what it costs a rejoin); with
    gpus > 1 also
    (d) one stage per GPU, vLLM pipeline and tensor parallel over them."""
    device = "cuda:0" if platform == "cuda" else ""
    out: list[System] = [VllmSystem("vllm-default", "`vllm serve` defaults")]
    if platform == "cuda":
        out.append(
            VllmSystem(
                "vllm-stage-runner",
                "`vllm serve`, a stage's runner (V1, no compile, decode graphs)",
                args=STAGE_RUNNER_ARGS,
                env=STAGE_RUNNER_ENV,
            )
        )
    out.append(LayerbusSystem("layerbus-1", "layerbus, 1 stage", (device,)))
    if platform == "cuda":
        out.append(
            LayerbusSystem(
                "layerbus-1-uncompiled",
                "layerbus, 1 stage, --no-torch-compile",
                (device,),
                env=(("LAYERBUS_TORCH_COMPILE", "0"),),
            )
        )
        out.append(
            LayerbusSystem(
                "layerbus-1-mega-aot",
                "layerbus, 1 stage, vLLM's mega AOT artifact",
                (device,),
                # vLLM's default from torch 2.12 on: one artifact per compiled model, loaded
                # without splitting the graph again (what a compiled restart spends time on).
                env=(("VLLM_USE_MEGA_AOT_ARTIFACT", "1"),),
                on_request=True,
            )
        )
    out += [
        LayerbusSystem(
            "layerbus-2-shared",
            f"layerbus, 2 stages on one {'GPU' if platform == 'cuda' else 'CPU'}",
            (device, device),
            shared_util if platform == "cuda" else None,
        ),
    ]
    if gpus > 1:
        devices = tuple(f"cuda:{i}" for i in range(gpus))
        out += [
            LayerbusSystem(f"layerbus-{gpus}-gpus", f"layerbus, {gpus} stages, 1 per GPU", devices),
            VllmSystem(f"vllm-pp{gpus}", f"`vllm serve` PP={gpus}", pipeline_parallel=gpus),
            VllmSystem(f"vllm-tp{gpus}", f"`vllm serve` TP={gpus}", tensor_parallel=gpus),
        ]
    return out


def vllm_command(engine: BenchEngine, system: VllmSystem, port: int) -> list[str]:
    """`vllm serve` with the shared engine flags and vLLM's defaults for everything else."""
    cmd = [sys.executable, "-m", "benchmark.vllm_cli", "serve", engine.model]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--served-model-name", engine.served_name, "--load-format", engine.load_format]
    cmd += ["--max-model-len", str(engine.max_model_len)]
    cmd += ["--max-num-seqs", str(engine.max_num_seqs)]
    cmd += ["--max-num-batched-tokens", str(engine.max_num_batched_tokens)]
    cmd += ["--seed", str(engine.seed)]
    if system.pipeline_parallel > 1:
        cmd += ["--pipeline-parallel-size", str(system.pipeline_parallel)]
    if system.tensor_parallel > 1:
        cmd += ["--tensor-parallel-size", str(system.tensor_parallel)]
    cmd += system.args
    if engine.platform == "cpu":
        # The CPU worker would reserve 0.92 of the host's memory by default and refuse.
        cmd += ["--kv-cache-memory-bytes", str(int(engine.cpu_kv_cache_gb * GIB))]
        cmd += ["--gpu-memory-utilization", "0.05"]
    return cmd


@dataclass(frozen=True)
class ChildPlan:
    """One process to start: its name and `layerbus` arguments."""

    name: str
    args: list[str]


@dataclass(frozen=True)
class LayerbusPlan:
    """The processes of one layerbus system and where it answers."""

    children: list[ChildPlan]
    port: int
    env: dict[str, str] = field(default_factory=dict)


def layerbus_plan(
    engine: BenchEngine,
    system: LayerbusSystem,
    num_layers: int,
    ports: list[int],
    metrics_ports: list[int] | None = None,
) -> LayerbusPlan:
    """Coordinator, stages (even layer split, one per device entry) and a gateway.

    ports: coordinator, gateway, then one per stage. metrics_ports: the coordinator's,
    then one per stage (their step-phase histograms); None: metrics off.
    """
    metrics = [str(p) for p in metrics_ports] if metrics_ports else []
    from services.stage.layers import even_split

    coordinator = f"tcp://127.0.0.1:{ports[0]}"
    children = [ChildPlan("coordinator", ["coordinator", "--bind", coordinator])]
    if metrics:
        children[0].args.extend(["--metrics-port", metrics[0]])
    ranges = even_split(num_layers, system.stages)
    for index, ((start, end), device, port) in enumerate(
        zip(ranges, system.devices, ports[2:], strict=True)
    ):
        args = ["stage", "--layers", f"{start}:{end}", "--coordinator", coordinator]
        if metrics:
            args += ["--metrics-port", metrics[1 + index]]
        args += ["--bind", f"tcp://127.0.0.1:{port}"]
        if device:
            args += ["--device", device]
        if system.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", str(system.gpu_memory_utilization)]
        if engine.platform == "cpu":
            args += ["--kv-cache-gb", str(engine.cpu_kv_cache_gb)]
        children.append(ChildPlan(f"stage-{start}-{end}", args))
    gateway = ["gateway", "--port", str(ports[1]), "--coordinator", coordinator]
    gateway += ["--model", engine.model, "--served-model-name", engine.served_name]
    gateway += ["--max-running-requests", "512"]
    children.append(ChildPlan("gateway", gateway))
    # Metrics off unless ports are named (each would take a port).
    env = engine.layerbus_env() | {"LAYERBUS_METRICS_PORT": "0"} | dict(system.env)
    return LayerbusPlan(children, ports[1], env)


def start(
    engine: BenchEngine, system: System, num_layers: int, log_dir: Path, timeout: float
) -> tuple[str, Children]:
    """Start `system`; return its base URL once it answers (the processes are stopped
    again if it does not within `timeout` seconds)."""
    children = Children(log_dir)
    with children.stopped_on_error():
        if isinstance(system, VllmSystem):
            port = free_port()
            env = child_env(engine.layerbus_env() if engine.platform == "cpu" else {})
            env.update(system.env)
            children.spawn(system.name, vllm_command(engine, system, port), env)
            url = f"http://127.0.0.1:{port}"
            children.wait_http(url + "/v1/models", timeout, system.name)
            return url, children
        ports = [free_port() for _ in range(2 + system.stages)]
        metrics = [free_port() for _ in range(1 + system.stages)]
        plan = layerbus_plan(engine, system, num_layers, ports, metrics)
        env = child_env(plan.env)
        for child in plan.children:
            children.spawn(child.name, [sys.executable, "-m", "services.ops.cli", *child.args], env)
        url = f"http://127.0.0.1:{plan.port}"
        children.wait_http(url + "/health", timeout, "coordinator")
        return url, children
