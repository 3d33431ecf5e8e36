"""CURVE keys, the ZAP allow-list and the loopback rule, over real sockets on inproc/loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from shared import curve
from shared.settings import TransportSettings
from shared.sockets import make_socket


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("coordinator", "gateway-a", "stage-a", "intruder"):
        curve.generate_keys(tmp_path, name)
    return tmp_path


def test_generate_writes_zmq_auth_certificates(keys: Path) -> None:
    public = curve.load_public_key(keys / "stage-a.key")
    pair = curve.load_key_pair(keys / "stage-a.key_secret")
    assert pair.public == public and len(pair.secret) == 40
    assert (keys / "stage-a.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(curve.KeyFileError, match="already exists"):
        curve.generate_keys(keys, "stage-a")


def test_a_public_key_file_is_not_a_key_pair(keys: Path) -> None:
    with pytest.raises(curve.KeyFileError, match="--secret-key"):
        curve.load_key_pair(keys / "stage-a.key")


def test_roles_come_from_file_names(keys: Path, tmp_path: Path) -> None:
    peers = curve.load_authorized_keys(keys)
    roles = sorted((p.role, p.name) for p in peers.values())
    assert roles == [("gateway", "gateway-a"), ("stage", "stage-a")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(curve.KeyFileError, match="--authorized-keys"):
        curve.load_authorized_keys(empty)


def test_service_keys_need_both_settings(keys: Path) -> None:
    assert not curve.ServiceKeys.load("", "", True).enabled
    with pytest.raises(curve.KeyFileError, match="--coordinator-key"):
        curve.ServiceKeys.load(str(keys / "stage-a.key_secret"), "", True)
    with pytest.raises(curve.KeyFileError, match="--secret-key"):
        curve.ServiceKeys.load("", str(keys / "coordinator.key"), True)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.3.4.5:0", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:9", True),
        ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:0", False),
        ("tcp://*:5555", False),
        ("tcp://10.0.0.2:5555", False),
        ("tcp://eth0:5555", False),
    ],
)
def test_loopback(address: str, loopback: bool) -> None:
    assert curve.is_loopback(address) is loopback


def test_plaintext_beyond_loopback_needs_insecure() -> None:
    with pytest.raises(curve.InsecureBind, match="--secret-key.*--insecure"):
        curve.check_bind("tcp://0.0.0.0:0", secured=False, insecure=False, service="stage")
    curve.check_bind("tcp://0.0.0.0:0", secured=False, insecure=True, service="stage")
    curve.check_bind("tcp://0.0.0.0:0", secured=True, insecure=False, service="stage")


def _exchange(
    keys: Path, client_name: str | None, server_key_name: str = "coordinator", wait_ms: int = 1500
) -> str | None:
    """Send one message to a CURVE ROUTER that admits stage-a; the sender's User-Id or None.

    None means nothing arrived within wait_ms (refused peers never get through).
    """
    transport = TransportSettings()
    ctx = zmq.Context()
    server_keys = curve.ServiceKeys(own=curve.load_key_pair(keys / "coordinator.key_secret"))
    allow = curve.AllowList({curve.load_public_key(keys / "stage-a.key")})
    auth = curve.start_authenticator(ctx, allow)
    router = make_socket(ctx, zmq.ROUTER, transport, curve=server_keys.server())
    port = router.bind_to_random_port("tcp://127.0.0.1")
    if client_name is None:
        options = None
    else:
        own = curve.load_key_pair(keys / f"{client_name}.key_secret")
        options = curve.CurveOptions(own, curve.load_public_key(keys / f"{server_key_name}.key"))
    dealer = make_socket(ctx, zmq.DEALER, transport, curve=options)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        dealer.send(b"hello")
        if not router.poll(wait_ms):
            return None
        frames = router.recv_multipart(copy=False)
        return curve.user_id(frames[-1]) or "plaintext"
    finally:
        dealer.close(0)
        router.close(0)
        auth.stop()
        ctx.term()


def test_listed_key_is_admitted_with_its_key_as_user_id(keys: Path) -> None:
    expected = curve.load_public_key(keys / "stage-a.key").decode()
    assert _exchange(keys, "stage-a", wait_ms=30_000) == expected


def test_unlisted_key_and_plaintext_are_refused(keys: Path) -> None:
    assert _exchange(keys, "intruder") is None
    assert _exchange(keys, None) is None


def test_client_with_the_wrong_server_key_gets_nothing_through(keys: Path) -> None:
    assert _exchange(keys, "stage-a", server_key_name="intruder") is None


def test_redialer_gets_through_once_the_peer_admits_the_key(keys: Path) -> None:
    transport = TransportSettings()
    ctx = zmq.Context()
    allow = curve.AllowList(set())
    auth = curve.start_authenticator(ctx, allow)
    server = curve.ServiceKeys(own=curve.load_key_pair(keys / "coordinator.key_secret"))
    router = make_socket(ctx, zmq.ROUTER, transport, curve=server.server())
    address = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    own = curve.load_key_pair(keys / "stage-a.key_secret")
    options = curve.CurveOptions(own, curve.load_public_key(keys / "coordinator.key"))
    dealer = make_socket(ctx, zmq.DEALER, transport, curve=options)
    redialer = curve.Redialer(dealer, address, interval_s=0.0)
    dealer.connect(address)
    try:
        assert redialer.monitor.poll(30_000), "the refusal was never reported"
        allow.add(own.public)
        redialer.tick(1.0)
        assert redialer.redials == 1
        dealer.send(b"after")
        assert router.poll(30_000)
        assert router.recv_multipart()[-1] == b"after"
    finally:
        redialer.close()
        dealer.close(0)
        router.close(0)
        auth.stop()
        ctx.term()
