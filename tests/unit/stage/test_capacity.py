"""What a stage offers placement: memory budget rules, /proc/meminfo, the probe on this CPU."""

from __future__ import annotations

import json

import pytest

from services.ops.plan_command import capacity_of
from services.stage.capacity import (
    GIB,
    CapacityError,
    MemoryBudget,
    StageOffer,
    available_host_memory,
    memory_budget,
    prefill_weight,
    probe_capacity,
)


def test_a_gpu_offers_its_utilization_share() -> None:
    budget = memory_budget("cuda", total=80 * GIB, free=75 * GIB)
    assert budget.bytes == int(0.9 * 80 * GIB)
    assert "--gpu-memory-utilization" in budget.why
    half = memory_budget("cuda", total=80 * GIB, free=50 * GIB, gpu_memory_utilization=0.5)
    assert half.bytes == 40 * GIB


def test_a_gpu_with_less_free_than_the_share_is_refused_as_vllm_would() -> None:
    with pytest.raises(CapacityError, match=r"only 60.0 GiB .* lower it to 0.75 or free the GPU"):
        memory_budget("cuda", total=80 * GIB, free=60 * GIB)


def test_a_cpu_offers_most_of_the_available_memory() -> None:
    assert memory_budget("cpu", total=24 * GIB, free=20 * GIB).bytes == int(0.9 * 20 * GIB)


def test_the_memory_cap_lowers_the_offer_but_never_raises_it() -> None:
    capped = memory_budget("cpu", total=24 * GIB, free=20 * GIB, cap_gb=4)
    assert capped == MemoryBudget(4 * GIB, "--memory-gb 4")
    above = memory_budget("cpu", total=24 * GIB, free=2 * GIB, cap_gb=4)
    assert above.bytes == int(0.9 * 2 * GIB)
    assert "less than --memory-gb 4" in above.why


def test_no_memory_left_names_the_setting() -> None:
    with pytest.raises(CapacityError, match="no memory to offer"):
        memory_budget("cpu", total=8 * GIB, free=0)
    with pytest.raises(CapacityError, match="--memory-gb must be > 0"):
        memory_budget("cpu", total=8 * GIB, free=8 * GIB, cap_gb=0)


def test_proc_meminfo_is_read_in_bytes() -> None:
    text = "MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:   20480000 kB\n"
    assert available_host_memory(text) == (24576000 * 1024, 20480000 * 1024)
    with pytest.raises(CapacityError, match="/proc/meminfo"):
        available_host_memory("nothing here")


def test_an_offer_is_a_stage_that_layerbus_plan_reads() -> None:
    offer = StageOffer("cpu (2 cores)", MemoryBudget(3 * GIB, "x"), 0.002, 0.03, 0.01, 0.0005)
    stage = capacity_of(offer.plan_item("home"), 30)
    assert (stage.name, stage.memory_bytes) == ("home", 3 * GIB)
    assert stage.decode_s == pytest.approx(0.002)
    assert stage.prefill_s == pytest.approx(0.03)
    assert stage.head_s == pytest.approx(0.01)
    assert stage.link_s == pytest.approx(0.0005)


def test_the_probe_measures_this_cpu_with_the_bundled_model() -> None:
    from shared.default_model import prepare_default_model

    config = json.loads((prepare_default_model() / "config.json").read_text())
    offer = probe_capacity(config, "float32", cap_gb=1.5)
    assert offer.device.startswith("cpu")
    assert offer.memory == MemoryBudget(int(1.5 * GIB), "--memory-gb 1.5")
    assert 0 < offer.decode_s < offer.prefill_s
    assert offer.head_s is not None and offer.head_s > 0


def test_equal_prompts_and_outputs_bring_one_prefill_chunk_per_32_decode_steps() -> None:
    # 16 generated tokens a decode step, 16 prompt tokens with them, 512 to a chunk.
    assert prefill_weight(1.0) == 16 / 512
    assert prefill_weight(4.0) == 4 * 16 / 512
    with pytest.raises(ValueError, match="prompt ratio must be >= 0"):
        prefill_weight(-1)
