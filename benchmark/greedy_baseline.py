"""Greedy reference: single-process vLLM with exactly the VllmConfig a layerbus stage builds.

The engine settings come from the LAYERBUS_* environment (EngineSettings), the platform
choices (dtype, graphs, KV cache) from shared/platform_defaults.py, and the config from
shared/engine_settings.build_vllm_config with vLLM's own executor and scheduler and one
pipeline rank: the same model settings as the stages, in one process. Each prompt runs on
its own, as benchmark/gpu_bench.py sends them one at a time through layerbus.

    python -m benchmark.greedy_baseline OUT.json [--max-tokens N] [--gpu-memory-utilization U]
    stdin: a JSON list of prompts, each a list of token ids
    OUT.json: a JSON list of the generated texts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("output", type=Path)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--gpu-memory-utilization", type=float, default=None)
    args = ap.parse_args(argv)
    prompts: list[list[int]] = json.loads(sys.stdin.read())
    # The model runner a stage uses (services/stage/server.py sets the same default).
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    from vllm import RequestOutput, SamplingParams
    from vllm.v1.engine.llm_engine import LLMEngine

    from shared.engine_settings import EngineSettings, build_vllm_config
    from shared.platform_defaults import detect_platform, stage_kv_cache_gb

    engine = EngineSettings.model_validate({})  # from the LAYERBUS_* environment
    platform = detect_platform()
    choice = engine.platform_choice(
        stage_kv_cache_gb(platform, None), args.gpu_memory_utilization, platform
    )
    config = build_vllm_config(engine, pipeline_size=1, choice=choice, tokenizer=True)
    llm = LLMEngine.from_vllm_config(config, disable_log_stats=True)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    texts = []
    for index, ids in enumerate(prompts):
        llm.add_request(str(index), {"prompt_token_ids": ids}, params)
        text = ""
        while llm.has_unfinished_requests():
            for out in llm.step():
                if isinstance(out, RequestOutput) and out.finished:
                    text = out.outputs[0].text
        texts.append(text)
    args.output.write_text(json.dumps(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
