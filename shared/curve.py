"""CURVE keys, socket security options and the ZAP allow-list (pyzmq's zmq.auth).

Keys are zmq.auth certificate files: NAME.key holds a public key, NAME.key_secret
the key pair. A server socket admits a client only if the ZAP handler (one
thread per zmq.Context) finds the client's public key in its AllowList; every
message from that client then carries the key (z85) as its "User-Id" property,
which receivers use to decide who sent it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from shared.dropped import drop

log = logging.getLogger("layerbus.curve")

ROLES = ("gateway", "stage")
# The ZAP domain of every layerbus server socket (one ZAP handler per context).
DOMAIN = "layerbus"


class KeyFileError(ValueError):
    """A key file or folder that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class KeyPair:
    """A service's own CURVE key pair (z85 text as bytes); immutable, any thread."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class Peer:
    """An authorized public key: its role (from the file name) and its name."""

    role: str
    name: str


@dataclass(frozen=True)
class CurveOptions:
    """What make_socket sets on one socket: server (server_key None) or client of server_key."""

    keys: KeyPair
    server_key: bytes | None = None
    domain: str = DOMAIN

    def apply(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
        if self.server_key is None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt_string(zmq.ZAP_DOMAIN, self.domain)
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)


def generate_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write folder/name.key and folder/name.key_secret; refuse to overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"--name {name!r}: use a plain file name such as stage-a or gateway-1")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    public, secret = target / f"{name}.key", target / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise KeyFileError(f"{public} already exists; pick another --name or remove the old keys")
    made_public, made_secret = zmq.auth.create_certificates(str(target), name)
    Path(made_secret).chmod(0o600)
    return Path(made_public), Path(made_secret)


def load_key_pair(path: str | Path, setting: str = "--secret-key") -> KeyPair:
    """The key pair in a .key_secret file; KeyFileError names the setting to fix."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{setting} {path}: cannot read a key pair: {err}") from None
    if not secret:
        raise KeyFileError(f"{setting} {path}: no secret key in it; give the .key_secret file")
    return KeyPair(public=public, secret=secret)


def load_public_key(path: str | Path, setting: str = "--coordinator-key") -> bytes:
    """The public key in a .key (or .key_secret) file."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{setting} {path}: cannot read a public key: {err}") from None
    return public


def role_of(file_name: str) -> str | None:
    """gateway*.key -> gateway, stage*.key -> stage, anything else -> None."""
    for role in ROLES:
        if file_name.startswith(role):
            return role
    return None


def load_authorized_keys(folder: str | Path) -> dict[bytes, Peer]:
    """Public keys of the gateways and stages a coordinator admits, by z85 key."""
    path = Path(folder)
    if not path.is_dir():
        raise KeyFileError(f"--authorized-keys {folder}: not a folder of .key files")
    peers: dict[bytes, Peer] = {}
    for file in sorted(path.glob("*.key")):
        role = role_of(file.name)
        if role is None:
            log.warning("ignoring %s: name it gateway*.key or stage*.key to give it a role", file)
            continue
        peers[load_public_key(file, "--authorized-keys")] = Peer(role=role, name=file.stem)
    if not peers:
        raise KeyFileError(
            f"--authorized-keys {folder}: no gateway*.key or stage*.key in it; "
            "create them with `layerbus keys generate DIR --name NAME`"
        )
    return peers


class AllowList:
    """ZAP credentials provider: admits the listed public keys; updated from any thread."""

    def __init__(self, keys: set[bytes] | None = None, label: str = "") -> None:
        self._keys = set(keys or ())
        self._lock = threading.Lock()
        self.label = label
        self.refused = 0

    def set(self, keys: set[bytes]) -> None:
        with self._lock:
            self._keys = set(keys)

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys.add(key)

    def callback(self, domain: str, key: bytes) -> bool:
        """Called on the ZAP thread for every CURVE handshake."""
        with self._lock:
            allowed = key in self._keys
        if not allowed:
            self.refused += 1
            drop(self.label or domain, "unlisted-key", "refused a CURVE peer with an unlisted key")
        return allowed


def start_authenticator(ctx: zmq.Context, allow: AllowList) -> ThreadAuthenticator:  # type: ignore[type-arg]
    """Run a ZAP handler for every CURVE server socket of ctx."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("layerbus.zap"))
    auth.start()
    auth.configure_curve_callback(domain=DOMAIN, credentials_provider=allow)
    return auth


def user_id(frame: Any) -> str | None:
    """The sender's z85 public key (a frame received with copy=False), None on plaintext."""
    try:
        value = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return None
    return str(value) if value else None


def is_loopback(address: str) -> bool:
    """True for inproc/ipc and for tcp addresses on 127.0.0.0/8, ::1 or localhost."""
    transport, _, rest = address.partition("://")
    if transport in ("inproc", "ipc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or host name: assume it is reachable


class InsecureBind(RuntimeError):
    """A plaintext socket on a non-loopback address without --insecure."""


def check_bind(address: str, secured: bool, insecure: bool, service: str) -> None:
    """Refuse to listen in plaintext beyond loopback unless --insecure; warn if so."""
    if secured or is_loopback(address):
        return
    if not insecure:
        raise InsecureBind(
            f"{service} refuses to listen on {address} without encryption: give it "
            "--secret-key FILE (LAYERBUS_SECRET_KEY; see `layerbus keys generate`), bind "
            "127.0.0.1, or pass --insecure to accept plaintext from anyone who can reach it"
        )
    log.warning(
        "%s listens on %s in PLAINTEXT without authentication (--insecure): anyone who "
        "can reach it can read prompts and control the service",
        service,
        address,
    )


@dataclass(frozen=True)
class ServiceKeys:
    """A service's own key pair and the coordinator's public key; None fields = CURVE off."""

    own: KeyPair | None = None
    coordinator: bytes | None = None

    @property
    def enabled(self) -> bool:
        return self.own is not None

    @classmethod
    def load(cls, secret_key: str, coordinator_key: str, needs_coordinator: bool) -> ServiceKeys:
        """Keys from the --secret-key / --coordinator-key settings (both or neither)."""
        if not secret_key:
            if coordinator_key and needs_coordinator:
                raise KeyFileError("--coordinator-key is set but --secret-key is not; give both")
            return cls()
        own = load_key_pair(secret_key)
        if not needs_coordinator:
            return cls(own=own)
        if not coordinator_key:
            raise KeyFileError(
                "--secret-key is set but --coordinator-key is not (LAYERBUS_COORDINATOR_KEY): "
                "give the coordinator's public .key file"
            )
        return cls(own=own, coordinator=load_public_key(coordinator_key))

    def server(self) -> CurveOptions | None:
        return None if self.own is None else CurveOptions(self.own, None)

    def client_of(self, server_key: bytes | None) -> CurveOptions | None:
        """Client options for a server with that public key (None: plaintext)."""
        if self.own is None:
            return None
        if not server_key:
            raise KeyFileError("CURVE is on but the peer's public key is unknown")
        return CurveOptions(self.own, server_key)


class Redialer:
    """Dials a CURVE client socket again after its peer refused the handshake.

    libzmq never retries a connection that ZAP refused. A stage connects to its
    next hop as soon as it is configured, possibly before that hop is configured
    and admits it; so the connection is dialled again (at most once per
    interval) until it is admitted. Owned by the thread that owns the socket.
    """

    def __init__(self, sock: zmq.Socket, address: str, interval_s: float = 1.0) -> None:  # type: ignore[type-arg]
        self.sock = sock
        self.address = address
        self.interval_s = interval_s
        self.monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self.failed_at: float | None = None
        self.last_dial = 0.0
        self.redials = 0

    def tick(self, now: float) -> None:
        """Call from the owner's loop: note refusals, dial again when due."""
        while self.monitor.poll(0):
            self.monitor.recv_multipart()
            if self.failed_at is None:
                self.failed_at = now
        if self.failed_at is not None and now - self.last_dial >= self.interval_s:
            self.sock.disconnect(self.address)
            self.sock.connect(self.address)
            self.failed_at = None
            self.last_dial = now
            self.redials += 1

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
