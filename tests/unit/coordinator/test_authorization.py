"""Who may send what to the coordinator: roles, stage names, identities, step results."""

from __future__ import annotations

import pytest

from services.coordinator.authorization import (
    LOCAL,
    Authorizer,
    Unauthorized,
    may_abort,
    step_result_refusal,
)
from shared import wire
from shared.curve import Peer

GW = b"G" * 40
GW2 = b"H" * 40
ST = b"S" * 40
ST2 = b"T" * 40


def register(name: str) -> wire.Register:
    return wire.Register(
        name=name,
        layer_start=0,
        layer_end=1,
        num_layers=1,
        data_address="tcp://127.0.0.1:1",
        kv_cache_specs=b"",
        available_kv_bytes=0,
        kv_cache_layouts=[],
        engine_fingerprint="",
        pid=1,
    )


GENERATE = wire.Generate(request_id="r", prompt_token_ids=[1], sampling=wire.SamplingSpec(1))


@pytest.fixture
def auth() -> Authorizer:
    return Authorizer(
        {
            GW: Peer("gateway", "gateway-a"),
            GW2: Peer("gateway", "gateway-b"),
            ST: Peer("stage", "stage-a"),
            ST2: Peer("stage", "stage-b"),
        }
    )


def test_unlisted_or_missing_key_is_unauthenticated(auth: Authorizer) -> None:
    with pytest.raises(Unauthorized) as err:
        auth.principal(None)
    assert err.value.reason == "unauthenticated"
    with pytest.raises(Unauthorized):
        auth.principal("X" * 40)


def test_stage_key_cannot_submit_generate(auth: Authorizer) -> None:
    stage = auth.principal(ST.decode())
    with pytest.raises(Unauthorized, match="may not send Generate"):
        auth.check(b"stage-a", stage, GENERATE)
    with pytest.raises(Unauthorized, match="may not send Abort"):
        auth.check(b"stage-a", stage, wire.Abort(request_ids=["r"]))


def test_gateway_key_cannot_register_heartbeat_or_deliver_results(auth: Authorizer) -> None:
    gateway = auth.principal(GW.decode())
    for msg in (
        register("stage-a"),
        wire.Heartbeat(name="stage-a", seq=1),
        wire.StepResult(step_id=1, req_ids=[], sampled_token_ids=[]),
    ):
        with pytest.raises(Unauthorized):
            auth.check(b"gw", gateway, msg)
    auth.check(b"gw", gateway, GENERATE)


def test_stage_speaks_only_under_its_key_name(auth: Authorizer) -> None:
    stage_a = auth.principal(ST.decode())
    auth.check(b"stage-a", stage_a, register("stage-a"))
    assert auth.stage_key("stage-a") == ST.decode()
    with pytest.raises(Unauthorized, match="stage-b"):
        auth.check(b"stage-a", stage_a, wire.Heartbeat(name="stage-b", seq=1))
    with pytest.raises(Unauthorized):
        auth.check(b"stage-a", stage_a, register("stage-b"))
    assert auth.stage_key("stage-b") is None


def test_an_identity_stays_bound_to_the_key_that_used_it(auth: Authorizer) -> None:
    auth.check(b"gw-1", auth.principal(GW.decode()), GENERATE)
    with pytest.raises(Unauthorized, match="identity"):
        auth.check(b"gw-1", auth.principal(GW2.decode()), wire.Abort(request_ids=["r"]))


def test_without_curve_every_local_peer_holds_every_role() -> None:
    auth = Authorizer(None)
    who = auth.principal(None)
    assert who == LOCAL
    auth.check(b"x", who, GENERATE)
    auth.check(b"x", who, register("anything"))
    assert auth.stage_key("anything") is None


def test_step_results_only_from_the_last_stage_for_steps_in_flight() -> None:
    chain = ["stage-a", "stage-b"]
    assert step_result_refusal("stage-b", False, chain, in_flight=True) is None
    assert step_result_refusal("stage-a", False, chain, in_flight=True) is not None
    assert step_result_refusal("stage-a", True, chain, in_flight=True) is None
    assert step_result_refusal("stage-c", True, chain, in_flight=True) is not None
    assert step_result_refusal("stage-b", False, chain, in_flight=False) == "stale"
    assert step_result_refusal(None, False, chain, in_flight=False) == "stale"
    assert step_result_refusal(None, True, chain, in_flight=True) is None


def test_only_the_submitting_identity_may_abort() -> None:
    assert may_abort(b"gw-1", b"gw-1")
    assert not may_abort(b"gw-1", b"gw-2")
    assert not may_abort(None, b"gw-1")
