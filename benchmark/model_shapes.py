"""Config-only model folders of named shapes, to serve with `--load-format dummy`.

A folder holds config.json (a Llama layout) and the bundled SmolLM2 tokenizer, no weights:
vLLM's dummy loader fills the weights with random values, so a benchmark runs a realistic
shape (Llama-3-8B, Llama-3-70B) with no weight files to carry. The vocabulary is the
tokenizer's (49,152), not Llama-3's, so prompts tokenize as they would for the bundled model.

    python -m benchmark.model_shapes llama3-8b /tmp/llama3-8b
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The tokenizer's vocabulary (SmolLM2): every shape uses it, so its token ids are valid.
VOCAB_SIZE = 49152
# Files of a prepared model folder that make up its tokenizer and chat template.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class Shape:
    """One decoder layout (Llama architecture); immutable, any thread."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    max_position_embeddings: int = 8192
    rope_theta: float = 500000.0
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"

    def parameters(self) -> int:
        """Weight count (embeddings, attention, MLP, norms, lm_head unless tied)."""
        attention = self.hidden * self.head_dim * (self.heads * 2 + self.kv_heads * 2)
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden
        heads = 1 if self.tie_word_embeddings else 2
        return self.layers * per_layer + heads * VOCAB_SIZE * self.hidden + self.hidden


SHAPES: dict[str, Shape] = {
    # Meta-Llama-3-8B's layout with the bundled tokenizer's vocabulary.
    "llama3-8b": Shape(
        layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128
    ),
    # Meta-Llama-3-70B's layout (about 140 GB in bf16: two H200s).
    "llama3-70b": Shape(
        layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, head_dim=128
    ),
    # A few MB of float32 weights that a CPU runs in tests; head_dim 64 is one that vLLM's
    # CPU attention supports.
    "tiny": Shape(
        layers=4,
        hidden=128,
        intermediate=256,
        heads=2,
        kv_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        dtype="float32",
    ),
}


def shape_named(name: str) -> Shape:
    """The shape called `name`; the error lists the names there are."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(
            f"unknown model shape {name!r}; choose one of {', '.join(SHAPES)}"
        ) from None


def config_for(shape: Shape, template: dict[str, Any]) -> dict[str, Any]:
    """config.json for `shape`, keeping the template's token ids and norm settings.

    The template is the bundled model's own config.json, so the keys are those the
    installed transformers writes (rope_parameters in 5.x, with rope_theta beside it).
    """
    config = {k: v for k, v in template.items() if not k.startswith("_")}
    config.pop("quantization_config", None)
    config.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        num_hidden_layers=shape.layers,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        rope_parameters={"rope_theta": shape.rope_theta, "rope_type": "default"},
        tie_word_embeddings=shape.tie_word_embeddings,
        torch_dtype=shape.dtype,
        dtype=shape.dtype,
    )
    return config


def write_shape(name: str, folder: Path, source: Path | None = None) -> Path:
    """Write the config-only folder of shape `name` into `folder` and return it.

    source: a model folder to take the tokenizer (and the config's token ids) from;
    default: the prepared bundled model (shared/default_model.py). Weight files already
    in `folder` are removed, so vLLM's default loader could never pick up stale ones.
    """
    shape = shape_named(name)
    if source is None:
        from shared.default_model import prepare_default_model

        source = prepare_default_model()
    template = json.loads((source / "config.json").read_text())
    if template.get("vocab_size") != VOCAB_SIZE:
        raise ValueError(
            f"{source} has a vocabulary of {template.get('vocab_size')}, the shapes need "
            f"{VOCAB_SIZE} (the bundled SmolLM2 tokenizer's)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file() and old.suffix in WEIGHT_SUFFIXES:
            old.unlink()
    for file in TOKENIZER_FILES:
        if (source / file).is_file():
            shutil.copy(source / file, folder / file)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"{source} has no tokenizer.json to copy")
    config = config_for(shape, template)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Write a config-only model folder (serve it with --load-format dummy)."
    )
    ap.add_argument("name", choices=sorted(SHAPES), help="model shape")
    ap.add_argument("folder", type=Path, help="where to write config.json and the tokenizer")
    ap.add_argument(
        "--tokenizer-from",
        type=Path,
        default=None,
        help="model folder with a 49,152-token tokenizer (default: the bundled model)",
    )
    args = ap.parse_args(argv)
    folder = write_shape(args.name, args.folder, args.tokenizer_from)
    shape = SHAPES[args.name]
    print(f"{folder}: {args.name}, {shape.parameters() / 1e9:.2f} B parameters ({shape.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
