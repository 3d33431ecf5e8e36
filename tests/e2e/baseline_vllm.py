"""Reference: single-process vLLM (same version, same dtype) greedy token ids.

Run as a script: reads a JSON list of prompt token-id lists on stdin, writes
a JSON list of generated token-id lists on stdout. Each prompt is generated
on its own, as the equivalence test sends them one at a time through layerbus.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    model, max_tokens = sys.argv[1], int(sys.argv[2])
    prompts = json.load(sys.stdin)
    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        max_num_seqs=64,
        max_num_batched_tokens=512,
        kv_cache_memory_bytes=256 << 20,
        seed=0,
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    out = []
    for ids in prompts:
        result = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        out.append(list(result[0].outputs[0].token_ids))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
