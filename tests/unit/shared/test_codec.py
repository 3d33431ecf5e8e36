import msgspec
import pytest
import torch

from shared import codec, wire
from shared.tensor_frames import frames_to_tensors, tensors_to_frames


def test_round_trip_generate() -> None:
    msg = wire.Generate(
        request_id="r1",
        prompt_token_ids=[1, 2, 3],
        sampling=wire.SamplingSpec(max_tokens=4, temperature=0.0, stop_token_ids=[2]),
    )
    assert codec.decode(codec.encode(msg)) == msg


@pytest.mark.parametrize(
    "frames",
    [
        [b"\x01"],
        [b"\xff", b"\x80"],
        [b"\x01", b"not msgpack"],
        [b"\x01", msgspec.msgpack.encode({"request_id": 5})],
    ],
)
def test_malformed_frames_raise_wire_error(frames: list[bytes]) -> None:
    with pytest.raises(wire.WireError):
        codec.decode(frames)


def test_unregistered_message_is_refused() -> None:
    with pytest.raises(TypeError):
        codec.encode(wire.TensorMeta(name="x", dtype="float32", shape=[1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_tensor_frames_round_trip(dtype: torch.dtype) -> None:
    tensors = {"hidden_states": torch.randn(7, 576).to(dtype), "residual": torch.randn(7, 576)}
    metas, buffers = tensors_to_frames(tensors)
    back = frames_to_tensors(metas, [memoryview(b) for b in buffers], max_elements=1 << 24)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor)


def test_tensor_frames_reject_inconsistent_sizes() -> None:
    metas, buffers = tensors_to_frames({"x": torch.zeros(4, 4)})
    with pytest.raises(wire.WireError, match="bytes"):
        frames_to_tensors(metas, [b"\x00" * 3], max_elements=1 << 20)
    with pytest.raises(wire.WireError, match="cap"):
        frames_to_tensors(metas, [memoryview(buffers[0])], max_elements=8)
    bad = [wire.TensorMeta(name="x", dtype="object", shape=[1])]
    with pytest.raises(wire.WireError, match="dtype"):
        frames_to_tensors(bad, [b"\x00"], max_elements=8)


def test_invalid_utf8_in_a_string_is_a_wire_error() -> None:
    import pytest

    from shared import codec, wire

    tag, body = codec.encode(wire.Heartbeat(name="stage-a", seq=1))
    bad = body.replace(b"stage-a", b"stage\xa3\xff")
    with pytest.raises(wire.WireError):
        codec.decode([tag, bad])
