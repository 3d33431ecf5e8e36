"""The wire contract: the typed decode refuses values out of the declared ranges."""

from __future__ import annotations

import importlib
import pkgutil

import msgspec
import pytest

from shared import codec, wire


def generate_frames(prompt: list[int] | None = None, **sampling: object) -> list[bytes]:
    spec = wire.SamplingSpec(**{"max_tokens": 8, **sampling})  # type: ignore[arg-type]
    return codec.encode(wire.Generate("r-1", [1, 2, 3] if prompt is None else prompt, spec))


def test_values_in_range_decode() -> None:
    msg = codec.decode(generate_frames(temperature=0.0, top_k=-1, logprobs=20, seed=-5))
    assert isinstance(msg, wire.Generate) and msg.sampling.top_k == -1


@pytest.mark.parametrize(
    ("frames", "field"),
    [
        (generate_frames([]), "prompt_token_ids"),
        (generate_frames([-1]), "prompt_token_ids"),
        (generate_frames(top_k=-9), "top_k"),
        (generate_frames(temperature=-1.0), "temperature"),
        (generate_frames(temperature=2.5), "temperature"),
        (generate_frames(temperature=float("nan")), "temperature"),
        (generate_frames(temperature=float("inf")), "temperature"),
        (generate_frames(top_p=0.0), "top_p"),
        (generate_frames(min_p=2.0), "min_p"),
        (generate_frames(repetition_penalty=0.0), "repetition_penalty"),
        (generate_frames(presence_penalty=3.0), "presence_penalty"),
        (generate_frames(frequency_penalty=-3.0), "frequency_penalty"),
        (generate_frames(max_tokens=0), "max_tokens"),
        (generate_frames(min_tokens=-1), "min_tokens"),
        (generate_frames(logprobs=21), "logprobs"),
        (generate_frames(seed=2**63), "seed"),
        (generate_frames(stop_token_ids=[-2]), "stop_token_ids"),
        (generate_frames(stop_token_ids=[1] * (wire.MAX_STOP_TOKEN_IDS + 1)), "stop_token_ids"),
    ],
)
def test_out_of_range_values_are_refused_by_name(frames: list[bytes], field: str) -> None:
    with pytest.raises(wire.WireError) as err:
        codec.decode(frames)
    assert f"$.{field}" in str(err.value) or f"$.sampling.{field}" in str(err.value)


def test_message_type_names_the_tag() -> None:
    assert codec.message_type(generate_frames()) is wire.Generate
    assert codec.message_type([b"\xff", b""]) is None


@pytest.mark.parametrize("allowed", [[], [-1]])
def test_allowed_token_ids_are_a_non_empty_list_of_token_ids(allowed: list[int]) -> None:
    with pytest.raises(wire.WireError, match="allowed_token_ids"):
        codec.decode(generate_frames(allowed_token_ids=allowed))


def test_bad_words_may_not_be_empty_strings() -> None:
    with pytest.raises(wire.WireError, match="bad_words"):
        codec.decode(generate_frames(bad_words=["ok", ""]))


def test_every_message_of_the_wire_modules_is_reexported_by_shared_wire() -> None:
    # Users write `wire.X`: a Struct declared in a wire module but not re-exported
    # would be reachable only by its module path.
    for info in pkgutil.iter_modules(wire.__path__):
        module = importlib.import_module(f"shared.wire.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, msgspec.Struct):
                assert getattr(wire, name, None) is value, f"shared.wire lacks {name}"
                assert name in wire.__all__, f"{name} missing from shared.wire.__all__"


def placed_register(offer: wire.Offer | None) -> wire.Register:
    return wire.Register(
        name="host-7",
        layer_start=0,
        layer_end=15,
        num_layers=30,
        data_address="tcp://127.0.0.1:7001",
        kv_cache_specs=b"",
        available_kv_bytes=1 << 20,
        kv_cache_layouts=["NHD"],
        engine_fingerprint="fp",
        pid=7,
        placed=True,
        offer=offer,
    )


def measured_offer(decode_s: float = 1e-3) -> wire.Offer:
    return wire.Offer(
        name="host-7",
        pid=7,
        num_layers=30,
        engine_fingerprint="fp",
        device="cpu",
        memory_bytes=1 << 30,
        decode_s=decode_s,
        prefill_s=2e-2,
        head_s=5e-3,
        link_s=1e-4,
        memory_why="--memory-gb 1",
    )


def test_a_placed_register_carries_its_measured_offer_through_the_decode() -> None:
    msg = placed_register(measured_offer())
    got = codec.decode(codec.encode(msg))
    assert got == msg and isinstance(got, wire.Register)
    assert got.offer is not None and got.offer.decode_s == 1e-3 and got.offer.head_s == 5e-3


def test_a_register_without_an_offer_still_decodes_both_ways() -> None:
    # An older stage sends no offer: the field reads None.
    older = msgspec.structs.asdict(placed_register(None))
    del older["offer"]
    got = codec.decode([codec.encode(placed_register(None))[0], msgspec.msgpack.encode(older)])
    assert isinstance(got, wire.Register) and got.offer is None

    # An older coordinator's Register lacks the field and ignores it.
    class OlderRegister(msgspec.Struct):
        name: str
        layer_start: int
        layer_end: int
        placed: bool = False

    body = codec.encode(placed_register(measured_offer()))[1]
    old = msgspec.msgpack.decode(body, type=OlderRegister)
    assert (old.name, old.layer_start, old.layer_end, old.placed) == ("host-7", 0, 15, True)


def test_the_offer_a_register_carries_is_held_to_the_offer_ranges() -> None:
    bad = msgspec.structs.asdict(placed_register(None))
    bad["offer"] = msgspec.structs.asdict(measured_offer())
    bad["offer"]["decode_s"] = 0.0
    frames = [codec.encode(placed_register(None))[0], msgspec.msgpack.encode(bad)]
    with pytest.raises(wire.WireError, match="decode_s"):
        codec.decode(frames)
