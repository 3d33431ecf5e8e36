"""wire.SamplingSpec -> vLLM SamplingParams: every wire field reaches vLLM by name."""

from __future__ import annotations

import msgspec
import pytest

from services.coordinator.sampling import engine_tokenizer, sampling_params
from shared import wire

vllm_sampling = pytest.importorskip("vllm.sampling_params")


def no_tokenizer() -> object:
    raise AssertionError("the tokenizer was loaded for a request without bad_words")


class Tokenizer:
    """Encodes a word as its length (a second token when it starts with a space)."""

    max_token_id = 99

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return [len(text), 1] if text.startswith(" ") else [len(text)]


SPEC = wire.SamplingSpec(
    max_tokens=9,
    temperature=0.5,
    top_p=0.8,
    top_k=7,
    min_p=0.1,
    seed=3,
    presence_penalty=0.2,
    frequency_penalty=-0.2,
    repetition_penalty=1.2,
    logprobs=2,
    ignore_eos=True,
    min_tokens=1,
    stop_token_ids=[4, 5],
)


def test_every_wire_field_is_a_sampling_params_field_of_the_same_name() -> None:
    fields = set(wire.SamplingSpec.__struct_fields__) - {"structured"}
    missing = fields - set(vllm_sampling.SamplingParams.__struct_fields__)
    assert not missing, f"vLLM SamplingParams has no field(s) {missing}: rename on the wire"


def test_values_reach_vllm_unchanged() -> None:
    params = sampling_params(SPEC, {}, eos=None, tokenizer=no_tokenizer)
    for name, value in msgspec.structs.asdict(SPEC).items():
        if name != "structured":
            assert getattr(params, name) == value, f"SamplingParams.{name} changed on the way"
    assert params.n == 1 and not params.detokenize
    assert params.output_kind == vllm_sampling.RequestOutputKind.DELTA


def test_generation_config_and_eos_are_applied_as_vllm_does() -> None:
    params = sampling_params(
        wire.SamplingSpec(max_tokens=4), {"eos_token_id": [2, 9]}, eos=2, tokenizer=no_tokenizer
    )
    # vLLM's update_from_generation_config: extra eos ids become stop tokens.
    assert 9 in params.all_stop_token_ids and params.eos_token_id == 2


def test_structured_spec_becomes_structured_outputs_params() -> None:
    schema = wire.StructuredSpec(json='{"type": "object"}')
    spec = wire.SamplingSpec(max_tokens=4, structured=schema)
    params = sampling_params(spec, {}, eos=None, tokenizer=no_tokenizer)
    assert params.structured_outputs.json == {"type": "object"}
    spec = wire.SamplingSpec(max_tokens=4, structured=wire.StructuredSpec(choice=["a", "b"]))
    assert sampling_params(
        spec, {}, eos=None, tokenizer=no_tokenizer
    ).structured_outputs.choice == ["a", "b"]


def test_logit_bias_reaches_vllm_clamped_as_vllm_clamps() -> None:
    params = sampling_params(
        wire.SamplingSpec(max_tokens=4, logit_bias={5: 250.0, 6: -3.5}), {}, None, no_tokenizer
    )
    assert params.logit_bias == {5: 100.0, 6: -3.5}


def test_allowed_token_ids_reach_vllm() -> None:
    params = sampling_params(
        wire.SamplingSpec(max_tokens=4, allowed_token_ids=[3, 8]), {}, None, no_tokenizer
    )
    assert params.allowed_token_ids == [3, 8]


def test_bad_words_become_token_ids_with_the_engines_tokenizer() -> None:
    spec = wire.SamplingSpec(max_tokens=4, bad_words=["Paris"])
    params = sampling_params(spec, {}, None, Tokenizer)
    # vLLM's update_from_tokenizer: the word, and with a leading space when that is a
    # different token sequence of the same length (here it is not).
    assert params.bad_words == ["Paris"] and params.bad_words_token_ids == [[5]]


def test_engine_tokenizer_loads_through_vllms_cached_tokenizer_from_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    import vllm.tokenizers

    asked: list[object] = []

    def cached(model_config: object, **kwargs: object) -> Tokenizer:
        asked.append(model_config)
        return Tokenizer()

    monkeypatch.setattr(vllm.tokenizers, "cached_tokenizer_from_config", cached)
    config = types.SimpleNamespace(model_config="the model config")
    load = engine_tokenizer(config)
    assert asked == [], "engine_tokenizer must not load the tokenizer before a request needs it"
    spec = wire.SamplingSpec(max_tokens=4, bad_words=["Paris"])
    assert sampling_params(spec, {}, None, load).bad_words_token_ids == [[5]]
    assert asked == ["the model config"], (
        "vllm.tokenizers.cached_tokenizer_from_config(model_config=...) was not used"
    )


def test_every_structured_field_is_a_structured_outputs_params_field() -> None:
    import dataclasses

    vllm_fields = {f.name for f in dataclasses.fields(vllm_sampling.StructuredOutputsParams)}
    missing = set(wire.StructuredSpec.__struct_fields__) - vllm_fields
    assert not missing, f"vLLM StructuredOutputsParams has no field(s) {missing}"


def test_structured_options_reach_vllm() -> None:
    spec = wire.StructuredSpec(
        regex="[0-9]+",
        disable_any_whitespace=True,
        disable_additional_properties=True,
        whitespace_pattern=" ?",
    )
    params = sampling_params(
        wire.SamplingSpec(max_tokens=4, structured=spec), {}, None, no_tokenizer
    )
    got = params.structured_outputs
    assert (got.regex, got.disable_any_whitespace, got.whitespace_pattern) == ("[0-9]+", True, " ?")
    assert got.disable_additional_properties and got.json is None
