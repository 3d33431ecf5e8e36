"""The two systems under test, started alike: same model, dtype, KV budget and cores.

- `vllm serve`: one process tree; its CPU worker binds the OpenMP threads to
  every benchmark core (VLLM_CPU_OMP_THREADS_BIND) and gets the whole KV budget.
- layerbus: coordinator, N stages and a gateway as separate processes. Stage i
  is pinned to one core (cores[i % len(cores)]) with one torch thread, and
  gets the share of the KV budget that its layers need, so both systems hold
  the same number of KV blocks.

With a delay, layerbus's hosts are put behind delay proxies (one process, one
route per host): the stages register through a proxy in front of the
coordinator, and each stage advertises a proxy in front of its own bind
address, which the coordinator (for stage 0) and the previous stage use. So
every inter-host link (coordinator -> stage 0 -> stage 1 -> coordinator) has
the delay; the gateway talks to the coordinator directly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.processes import Children, child_env, free_port

GIB = 1 << 30


@dataclass
class Engine:
    """Engine shape both systems share."""

    model: str
    served_model_name: str
    dtype: str = "float32"
    max_model_len: int = 2048
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 512
    kv_cache_gb: float = 2.0
    cores: list[int] = field(default_factory=lambda: [0, 1])
    seed: int = 0


@dataclass
class Started:
    """A running system: its base URL and the processes behind it."""

    url: str
    children: Children


def vllm_command(engine: Engine, port: int) -> list[str]:
    """`vllm serve` under vllm-cpu, through the wrapper that fixes its version lookup."""
    return [
        sys.executable,
        "-m",
        "benchmark.vllm_cli",
        "serve",
        engine.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        engine.served_model_name,
        "--dtype",
        engine.dtype,
        "--max-model-len",
        str(engine.max_model_len),
        "--max-num-seqs",
        str(engine.max_num_seqs),
        "--max-num-batched-tokens",
        str(engine.max_num_batched_tokens),
        "--kv-cache-memory-bytes",
        str(int(engine.kv_cache_gb * GIB)),
        "--gpu-memory-utilization",
        "0.05",
        "--enforce-eager",
        "--enable-chunked-prefill",
        "--enable-prefix-caching",
        "--seed",
        str(engine.seed),
    ]


def start_vllm(engine: Engine, log_dir: Path, timeout: float) -> Started:
    """Single-process `vllm serve` on every benchmark core; returns once /health is 200."""
    children = Children(log_dir)
    port = free_port()
    env = child_env({"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, engine.cores))})
    with children.stopped_on_error():
        children.spawn("vllm-serve", vllm_command(engine, port), env, set(engine.cores))
        url = f"http://127.0.0.1:{port}"
        children.wait_http(url + "/health", timeout, "vllm-serve")
        children.wait_http(url + "/v1/models", timeout, "vllm-serve")
    return Started(url, children)


def _layerbus(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "services.ops.cli", *args]


def stage_kv_gb(engine: Engine, start: int, end: int, num_layers: int) -> float:
    """The share of the KV budget a stage needs for its layers (same block count as vLLM)."""
    return engine.kv_cache_gb * (end - start) / num_layers


def start_layerbus(
    engine: Engine,
    layers: list[tuple[int, int]],
    num_layers: int,
    log_dir: Path,
    timeout: float,
    *,
    delay_ms: float = 0.0,
    micro_batches: int | None = None,
    extra_coordinator_env: dict[str, str] | None = None,
) -> Started:
    """Coordinator, stages and gateway (behind delay proxies when delay_ms > 0)."""
    children = Children(log_dir)
    engine_env = {
        "LAYERBUS_MODEL": engine.model,
        "LAYERBUS_DTYPE": engine.dtype,
        "LAYERBUS_MAX_MODEL_LEN": str(engine.max_model_len),
        "LAYERBUS_MAX_NUM_SEQS": str(engine.max_num_seqs),
        "LAYERBUS_MAX_NUM_BATCHED_TOKENS": str(engine.max_num_batched_tokens),
        "LAYERBUS_SEED": str(engine.seed),
    }
    env = child_env(engine_env)
    coordinator_env = dict(env)
    # Read by the coordinator's micro-batch setting; ignored by a coordinator without it.
    coordinator_env.pop("LAYERBUS_MICRO_BATCHES", None)
    if micro_batches is not None:
        coordinator_env["LAYERBUS_MICRO_BATCHES"] = str(micro_batches)
    coordinator_env.update(extra_coordinator_env or {})
    coordinator = f"tcp://127.0.0.1:{free_port()}"
    binds = [f"tcp://127.0.0.1:{free_port()}" for _ in layers]
    stage_coordinator, advertised = coordinator, list(binds)
    with children.stopped_on_error():
        if delay_ms > 0:
            stage_coordinator = f"tcp://127.0.0.1:{free_port()}"
            advertised = [f"tcp://127.0.0.1:{free_port()}" for _ in layers]
            proxy = [sys.executable, "-m", "benchmark.delay_proxy", "--delay-ms", str(delay_ms)]
            for listen, target in zip(
                [stage_coordinator, *advertised], [coordinator, *binds], strict=True
            ):
                proxy += ["--listen", listen, "--target", target]
            children.spawn("delay-proxy", proxy, env)
            children.wait_for_log("delay-proxy", "delay_proxy ready", timeout)
        children.spawn(
            "coordinator", _layerbus(["coordinator", "--bind", coordinator]), coordinator_env
        )
        for i, (start, end) in enumerate(layers):
            core = engine.cores[i % len(engine.cores)]
            stage_env = dict(env, LAYERBUS_STAGE_THREADS="1", OMP_NUM_THREADS="1")
            args = [
                "stage",
                "--layers",
                f"{start}:{end}",
                "--coordinator",
                stage_coordinator,
                "--bind",
                binds[i],
                "--advertise",
                advertised[i],
                "--kv-cache-gb",
                f"{stage_kv_gb(engine, start, end, num_layers):.6f}",
            ]
            children.spawn(f"stage-{start}-{end}", _layerbus(args), stage_env, {core})
        port = free_port()
        gateway = [
            "gateway",
            "--port",
            str(port),
            "--coordinator",
            coordinator,
            "--model",
            engine.model,
            "--served-model-name",
            engine.served_model_name,
            "--max-running-requests",
            str(max(256, 2 * engine.max_num_seqs)),
        ]
        children.spawn("gateway", _layerbus(gateway), env)
        url = f"http://127.0.0.1:{port}"
        children.wait_http(url + "/health", timeout, "coordinator")
    return Started(url, children)
