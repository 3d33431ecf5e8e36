from pathlib import Path

from benchmark.load import Load, bench_command, pick_metrics
from benchmark.systems import GIB, Engine, stage_kv_gb, vllm_command


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_vllm_serve_gets_the_engine_shape() -> None:
    engine = Engine(model="/m", served_model_name="m", kv_cache_gb=1.5, max_num_seqs=96)
    cmd = vllm_command(engine, 8123)
    assert cmd[1:5] == ["-m", "benchmark.vllm_cli", "serve", "/m"]
    assert _flag(cmd, "--dtype") == "float32"
    assert _flag(cmd, "--max-num-seqs") == "96"
    assert _flag(cmd, "--kv-cache-memory-bytes") == str(int(1.5 * GIB))
    assert _flag(cmd, "--port") == "8123"


def test_stages_share_the_kv_budget_by_layers() -> None:
    engine = Engine(model="/m", served_model_name="m", kv_cache_gb=2.0)
    assert stage_kv_gb(engine, 0, 15, 30) == 1.0
    assert stage_kv_gb(engine, 0, 10, 30) + stage_kv_gb(engine, 10, 30, 30) == 2.0


def test_the_load_is_a_seeded_random_closed_loop() -> None:
    load = Load(input_len=128, output_len=64, concurrency=16, num_prompts=64, seed=3)
    cmd = bench_command(load, "http://127.0.0.1:1", "m", "/m", Path("/r"), "f")
    assert cmd[3:5] == ["bench", "serve"]
    assert _flag(cmd, "--dataset-name") == "random"
    assert _flag(cmd, "--random-output-len") == "64"
    assert _flag(cmd, "--max-concurrency") == "16"
    assert _flag(cmd, "--seed") == "3"
    assert "--ignore-eos" in cmd


def test_missing_metrics_become_none() -> None:
    picked = pick_metrics({"output_throughput": 12.5})
    assert picked["output_throughput"] == 12.5
    assert picked["p99_tpot_ms"] is None
