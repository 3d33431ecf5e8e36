"""Throughput of layerbus against single-process vLLM, as a ratio in one invocation."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.stage.layers import even_split  # noqa: E402
from shared.default_model import prepare_default_model  # noqa: E402
from tests.e2e.cluster import Cluster  # noqa: E402

BASELINE = """
import json, sys, time
from vllm import LLM, SamplingParams
def main():
    model, n, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=2048,
              max_num_seqs=64, max_num_batched_tokens=512, kv_cache_memory_bytes=512 << 20)
    prompts = [f"Write a short story about robot number {i}." for i in range(n)]
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print("RESULT " + json.dumps({"tokens": tokens, "seconds": elapsed}))
if __name__ == "__main__":
    main()
"""


def run_baseline(model: str, prompts: int, max_tokens: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BASELINE)
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_LOGGING_LEVEL="WARNING")
    cmd = [sys.executable, f.name, model, str(prompts), str(max_tokens)]
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=1800)
    line = [x for x in out.stdout.decode().splitlines() if x.startswith("RESULT ")]
    if not line:
        raise SystemExit(out.stderr.decode()[-3000:])
    result: dict[str, float] = json.loads(line[-1][7:])
    return result


async def run_layerbus(url: str, prompts: int, max_tokens: int) -> dict[str, float]:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        body = {
            "model": "SmolLM2-135M-Instruct",
            "prompt": f"Write a short story about robot number {i}.",
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        resp = await client.post(url + "/v1/completions", json=body)
        resp.raise_for_status()
        return int(resp.json()["usage"]["completion_tokens"])

    async with httpx.AsyncClient(timeout=1800) as client:
        await asyncio.gather(*(one(client, i) for i in range(2)))  # warm-up
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(client, i) for i in range(prompts)))
        return {"tokens": sum(counts), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    model = str(prepare_default_model())
    base = run_baseline(model, args.prompts, args.max_tokens)
    with tempfile.TemporaryDirectory() as logs:
        cluster = Cluster(model=model, layers=even_split(30, args.stages), log_dir=Path(logs))
        try:
            cluster.start()
            ours = asyncio.run(run_layerbus(cluster.url, args.prompts, args.max_tokens))
        finally:
            cluster.stop()
    base_tps = base["tokens"] / base["seconds"]
    ours_tps = ours["tokens"] / ours["seconds"]
    print(f"single-process vLLM: {base_tps:8.1f} tokens/s ({base['tokens']:.0f} tokens)")
    print(f"layerbus {args.stages} stages: {ours_tps:8.1f} tokens/s ({ours['tokens']:.0f} tokens)")
    print(f"ratio layerbus / vLLM: {ours_tps / base_tps:.2f}")


if __name__ == "__main__":
    main()
