"""Default sampling values from the model's generation_config, as `vllm serve` applies them.

`--generation-config auto` (the default) reads the model folder's
generation_config.json; `vllm` uses vLLM's neutral defaults; any other value
is a folder holding a generation_config.json. A field the client leaves out
takes the model's value, then OpenAI's default (vLLM's `to_sampling_params`).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("layerbus.gateway")

# The generation_config fields vLLM's ModelConfig.get_diff_sampling_param reads.
_FIELDS = (
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "max_new_tokens",
)

# OpenAI's (and vLLM's) values for a field neither the client nor the model sets.
NEUTRAL: dict[str, float | int] = {
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
}


def _generation_config(folder: str) -> dict[str, Any]:
    """The non-default fields of a folder's generation config (vLLM's try_get_generation_config)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(folder)
    except OSError:
        try:
            config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
        except OSError:
            return {}
    diff: dict[str, Any] = config.to_diff_dict()
    return diff


def load_sampling_defaults(model: str, source: str = "auto") -> dict[str, Any]:
    """Sampling defaults (vLLM names; max_new_tokens becomes max_tokens) for `source`."""
    if source == "vllm":
        return {}
    config = _generation_config(model if source == "auto" else source)
    defaults = {name: config[name] for name in _FIELDS if config.get(name) is not None}
    if "max_new_tokens" in defaults:
        defaults["max_tokens"] = defaults.pop("max_new_tokens")
    if defaults:
        log.warning(
            "default sampling parameters come from %s: %s; start the gateway with "
            "--generation-config vllm to use vLLM's neutral defaults instead",
            "the model's generation_config.json" if source == "auto" else source,
            defaults,
        )
    return defaults


def pick(name: str, value: Any, defaults: dict[str, Any]) -> Any:
    """The client's value, else the model's default, else the neutral one."""
    if value is not None:
        return value
    return defaults.get(name, NEUTRAL[name])
