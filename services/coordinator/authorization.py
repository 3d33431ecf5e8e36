"""Who may send which message to the coordinator (pure logic, no sockets).

With CURVE on, every message carries the sender's public key (its ZAP
User-Id); the key's file name in --authorized-keys gives its role. Gateways
may submit, abort and ask for status; stages may register, heartbeat, report
configuration and deliver step results, each only under its key's name (the
file name without .key: stage-a.key speaks for the stage named stage-a). A
ROUTER identity, once used by one key, stays bound to it, so a peer cannot
speak through another peer's identity.

With CURVE off the coordinator listens on loopback only (shared.curve.check_bind)
and every local peer holds every role; the rules that need no key (the gateway
that submitted a request is the only one that may abort it, step results only
from the chain) still apply, elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.coordinator.validation import RefusedGenerate
from shared import wire
from shared.curve import Peer

MAX_IDENTITIES = 65_536
# A Generate the typed decode refused is still a Generate: only gateways may send one.
GATEWAY_MESSAGES = (wire.Generate, RefusedGenerate, wire.Abort, wire.StatusQuery)
STAGE_MESSAGES = (
    wire.Register,
    wire.Heartbeat,
    wire.Configured,
    wire.StepResult,
    wire.Leave,
    wire.Offer,
)


class Unauthorized(Exception):
    """A message its sender may not send; the receiver drops and counts it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who sent a message: a listed key (role, name) or, with CURVE off, a local peer."""

    key: str | None
    role: str
    name: str

    @property
    def local(self) -> bool:
        return self.key is None


LOCAL = Principal(key=None, role="local", name="local peer")


def role_allows(role: str, msg: object) -> bool:
    """True if a sender of that role may send msg to the coordinator."""
    if role == "local":
        return isinstance(msg, GATEWAY_MESSAGES + STAGE_MESSAGES)
    if role == "gateway":
        return isinstance(msg, GATEWAY_MESSAGES)
    if role == "stage":
        return isinstance(msg, STAGE_MESSAGES)
    return False


def stage_name_of(msg: object) -> str | None:
    """The stage name a stage message speaks for (StepResult names none)."""
    if isinstance(msg, wire.Register | wire.Heartbeat | wire.Configured | wire.Leave | wire.Offer):
        return msg.name
    return None


class Authorizer:
    """Roles of keys, stage-name and identity bindings; owned by the coordinator I/O thread."""

    def __init__(self, authorized: dict[bytes, Peer] | None) -> None:
        self.enabled = authorized is not None
        self._peers = {k.decode(): p for k, p in (authorized or {}).items()}
        self.stage_keys: dict[str, str] = {}  # stage name -> key it registered with
        self._identities: dict[bytes, str] = {}  # ROUTER identity -> key

    def principal(self, user_id: str | None) -> Principal:
        """The sender of a message whose ZAP User-Id is user_id; Unauthorized if unknown."""
        if not self.enabled:
            return LOCAL
        peer = self._peers.get(user_id or "")
        if peer is None:
            # ZAP admits only listed keys, so this is a plaintext or foreign-domain peer.
            raise Unauthorized("unauthenticated", "message without a listed CURVE key")
        return Principal(key=user_id, role=peer.role, name=peer.name)

    def check(self, identity: bytes, who: Principal, msg: object) -> None:
        """Raise Unauthorized unless who may send msg through this ROUTER identity."""
        if not role_allows(who.role, msg):
            raise Unauthorized("role", f"{who.role} {who.name} may not send {type(msg).__name__}")
        if who.local:
            return
        bound = self._identities.setdefault(identity, who.key or "")
        if len(self._identities) > MAX_IDENTITIES:
            # Oldest first (insertion order): identities of long-gone connections.
            del self._identities[next(iter(self._identities))]
        if bound != who.key:
            raise Unauthorized("identity", f"{who.name} used another peer's identity")
        name = stage_name_of(msg)
        if name is not None and name != who.name:
            raise Unauthorized("identity", f"{who.name} may not speak for stage {name!r}")
        if isinstance(msg, wire.Register):
            self.stage_keys[name or ""] = who.key or ""

    def stage_key(self, name: str) -> str | None:
        """The public key (z85) a stage registered with; None with CURVE off."""
        return self.stage_keys.get(name)


def step_result_refusal(
    sender_stage: str | None,
    has_error: bool,
    chain: Sequence[str],
    in_flight: bool,
) -> str | None:
    """Why a StepResult must be dropped, or None to deliver it.

    sender_stage is the stage name the sender's key registered (None with CURVE
    off: any local peer); chain the current chain's stage names in order;
    in_flight whether the step id is a step in flight of the current chain
    generation. Only the last stage delivers results; any chain stage may
    report that a step failed (a middle stage that cannot run it).
    """
    if not in_flight:
        return "stale"
    if sender_stage is None:
        return None
    if not chain or sender_stage not in chain:
        return "not in the current chain"
    if not has_error and sender_stage != chain[-1]:
        return "only the last stage delivers step results"
    return None


def may_abort(request_owner: bytes | None, sender: bytes) -> bool:
    """Only the ROUTER identity that submitted a request may abort it."""
    return request_owner is not None and request_owner == sender
