import pytest

from benchmark.hop_latency import activation, decode_plan, measure, percentile, summarize
from shared import codec, wire


def test_the_decode_plan_is_a_valid_wire_step() -> None:
    plan = decode_plan(32)
    step = wire.Step(step_id=7, plan=plan, tensors=[])
    decoded = codec.decode(codec.encode(step))
    assert decoded == step
    assert plan.total_num_scheduled_tokens == 32
    assert sorted(plan.num_scheduled_tokens.values()) == [1] * 32


def test_activation_is_hidden_states_and_residual() -> None:
    tensors = activation(32, 576)
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "hidden_states": (32, 576),
        "residual": (32, 576),
    }


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([0.0, 10.0], 25) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_reports_the_added_latency() -> None:
    summary = summarize([1.0, 1.0, 1.0], [1.5, 1.5, 1.5])
    assert summary["added_ms"] == {"median": 0.5, "p99": 0.5}


@pytest.mark.parametrize("framed", [False, True])
def test_both_ways_complete_every_round(framed: bool) -> None:
    hops = measure(rows=4, hidden=8, rounds=5, warmup=1, framed=framed)
    assert len(hops) == 5
    assert all(h > 0 for h in hops)
