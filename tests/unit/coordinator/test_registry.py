import pytest

from services.coordinator.registry import Registry, RegistryError
from shared import wire

FP = "dtype=bfloat16"


def reg(name: str, start: int, end: int, layers: int = 30, fp: str = FP) -> wire.Register:
    return wire.Register(
        name=name,
        layer_start=start,
        layer_end=end,
        num_layers=layers,
        data_address=f"tcp://127.0.0.1:{7000 + start}",
        kv_cache_specs=b"",
        available_kv_bytes=1,
        kv_cache_layouts=[],
        engine_fingerprint=fp,
        pid=1,
    )


def test_chain_needs_every_layer() -> None:
    r = Registry(30, FP)
    r.add(b"a", reg("a", 0, 15), now=0)
    assert r.chain() is None
    assert r.missing() == "15:30"
    r.add(b"b", reg("b", 15, 30), now=0)
    chain = r.chain()
    assert chain is not None
    assert [s.name for s in chain] == ["a", "b"]
    assert r.missing() == "none"


def test_uneven_three_stage_chain() -> None:
    r = Registry(30, FP)
    for name, (s, e) in zip("xyz", [(24, 30), (0, 4), (4, 24)], strict=True):
        r.add(name.encode(), reg(name, s, e), now=0)
    chain = r.chain()
    assert chain is not None
    assert [s.layers for s in chain] == [(0, 4), (4, 24), (24, 30)]


def test_refuses_mismatched_model_and_settings() -> None:
    r = Registry(30, FP)
    with pytest.raises(RegistryError, match="same --model"):
        r.add(b"a", reg("a", 0, 15, layers=24), now=0)
    with pytest.raises(RegistryError, match="LAYERBUS_"):
        r.add(b"a", reg("a", 0, 15, fp="dtype=float32"), now=0)


def test_silent_stage_expires_and_breaks_the_chain() -> None:
    r = Registry(30, FP)
    r.add(b"a", reg("a", 0, 15), now=0)
    r.add(b"b", reg("b", 15, 30), now=0)
    r.seen("a", now=10)
    dead = r.expire(now=10, timeout=5)
    assert [d.name for d in dead] == ["b"]
    assert r.chain() is None
    assert r.expire(now=11, timeout=5) == []  # reported once


def test_configured_stage_preferred_over_standby() -> None:
    r = Registry(30, FP)
    r.add(b"s", reg("a-standby", 0, 15), now=0)
    live = r.add(b"l", reg("z-live", 0, 15), now=0)
    live.state = "configured"
    r.add(b"b", reg("b", 15, 30), now=0)
    chain = r.chain()
    assert chain is not None and chain[0].name == "z-live"


def test_dead_stage_that_speaks_again_is_revived() -> None:
    r = Registry(30, FP)
    a = r.add(b"a", reg("a", 0, 30), now=0)
    a.state = "configured"
    assert [d.name for d in r.expire(now=10, timeout=5)] == ["a"]
    assert r.chain() is None
    r.seen("a", now=11)
    assert a.state == "configured"
    chain = r.chain()
    assert chain is not None and chain[0] is a


def test_rebuild_prefers_survivors_then_standbys_of_the_same_ranges() -> None:
    r = Registry(30, FP)
    a = r.add(b"a", reg("a", 0, 15), now=0)
    b = r.add(b"b", reg("b", 15, 30), now=0)
    r.add(b"sb", reg("sb", 15, 30), now=0)
    r.add(b"odd", reg("odd", 0, 10), now=0)
    r.mark_dead("b")
    chain = r.chain(ranges=[(0, 15), (15, 30)], prefer=[a, b])
    assert chain is not None
    assert [s.name for s in chain] == ["a", "sb"]


def test_rebuild_refuses_other_ranges() -> None:
    r = Registry(30, FP)
    r.add(b"a", reg("a", 0, 10), now=0)
    r.add(b"b", reg("b", 10, 30), now=0)
    assert r.chain() is not None
    assert r.chain(ranges=[(0, 15), (15, 30)]) is None


def test_heartbeat_of_another_process_is_not_a_sign_of_life() -> None:
    r = Registry(30, FP)
    r.add(b"a", reg("a", 0, 15), now=0)
    r.expire(now=100, timeout=5)
    assert r.seen("a", now=101, pid=999) is None
    assert r.stages["a"].state == "dead"
    record = r.seen("a", now=101, pid=1)
    assert record is not None and record.state == "registered"
