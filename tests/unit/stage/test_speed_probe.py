"""The speed probe's reference layer and timing, on this CPU with the bundled model's shape."""

from __future__ import annotations

import json

import pytest
import torch

from services.coordinator.model_profile import profile_from_config
from services.stage.speed_probe import LayerShape, ReferenceLayer, fastest_time, probe_speed
from shared.default_model import prepare_default_model


def bundled_config() -> dict[str, object]:
    return dict(json.loads((prepare_default_model() / "config.json").read_text()))


def test_the_shape_comes_from_the_config() -> None:
    shape = LayerShape.from_config(bundled_config())
    assert shape == LayerShape(
        hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152
    )


def test_the_reference_layer_has_the_size_placement_assumes() -> None:
    config = bundled_config()
    layer = ReferenceLayer(LayerShape.from_config(config), torch.float32, torch.device("cpu"))
    assert layer.parameter_count() * 4 == profile_from_config(config, 4).layer_bytes


def test_decode_and_prefill_forwards_keep_the_hidden_shape() -> None:
    shape = LayerShape(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    layer = ReferenceLayer(shape, torch.float32, torch.device("cpu"))
    past = (torch.randn(3, 2, 10, 16), torch.randn(3, 2, 10, 16))
    with torch.inference_mode():
        assert layer(torch.randn(3, 1, 64), past).shape == (3, 1, 64)
        assert layer(torch.randn(1, 7, 64)).shape == (1, 7, 64)


def test_fastest_time_warms_up_once_then_keeps_the_fastest_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.stage import speed_probe

    clock = [0.0]
    durations = iter([100.0, 5.0, 3.0, 9.0, 4.0])  # the warm-up is the slowest and ignored
    calls: list[str] = []

    def run() -> None:
        calls.append("run")
        clock[0] += next(durations)

    monkeypatch.setattr(speed_probe.time, "perf_counter", lambda: clock[0])
    seconds = fastest_time(run, 4, lambda: calls.append("sync"))
    assert calls == ["run", "sync"] * 5
    assert seconds == 3.0


def test_short_calls_are_timed_until_the_window_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.stage import speed_probe

    clock = [0.0]
    calls = [0]

    def run() -> None:
        calls[0] += 1
        clock[0] += 0.01

    monkeypatch.setattr(speed_probe.time, "perf_counter", lambda: clock[0])
    assert fastest_time(run, 3, lambda: None, window_s=0.5) == pytest.approx(0.01)
    assert calls[0] == 1 + 50  # the warm-up, then 0.5 s of 10 ms calls
    calls[0] = 0
    fastest_time(run, 3, lambda: None, window_s=100.0, max_runs=20)
    assert calls[0] == 1 + 20


def test_a_prefill_chunk_takes_longer_than_a_decode_step_on_this_cpu() -> None:
    shape = LayerShape.from_config(bundled_config())
    speed = probe_speed(shape, torch.float32, torch.device("cpu"), repeats=3)
    # 512 prompt tokens against 16 sequences' single tokens: ~30x the multiply-adds.
    assert 0 < speed.decode_s < speed.prefill_s
    assert speed.head_s is not None and speed.head_s > 0


def test_without_a_vocabulary_the_head_is_not_timed() -> None:
    shape = LayerShape(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    assert probe_speed(shape, torch.float32, torch.device("cpu"), repeats=1).head_s is None
