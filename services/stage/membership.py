"""A stage's place in the coordinator's chain (pure; no sockets, no vLLM).

The control plane (control.py) writes it on Configure and Reset; the
activation hop (hop.py) reads it to decide which steps and ring tokens it
admits. With CURVE a step is taken only from the upstream hop's key, ring
tokens only from the last stage's key (or, for a failed step, the
coordinator's); a step of another chain generation, or one for a standby, is
stale: its requests were resumed elsewhere.
"""

from __future__ import annotations

from services.stage.plan_validation import PlanLimits
from shared import wire

# Seconds between registrations while unconfigured or while the coordinator is silent.
REGISTER_RETRY_S = 3.0

# Why a message is dropped: (layerbus_dropped_messages_total reason, log detail).
Refusal = tuple[str, str]


def announce_due(
    configured: bool,
    now: float,
    last_heard: float,
    last_register: float,
    interval_s: float,
    misses: int,
) -> bool:
    """Whether to send Register now: until configured, or when the coordinator fell silent.

    A configured stage keeps serving while it announces itself again: a
    coordinator that merely paused ignores it, a restarted one learns of it.
    """
    silent = now - last_heard > interval_s * misses
    return (not configured or silent) and now - last_register > REGISTER_RETRY_S


def offered_kv_bytes(available: int, held: int) -> int:
    """The KV memory a stage offers once its cache is allocated (`held` bytes): no more
    than that, so a restarted coordinator never asks it for more blocks than it holds."""
    return min(available, held) if held > 0 else available


class Membership:
    """The stage's chain state (KV cache held, generation, upstream keys); main thread.

    The heartbeat thread reads `generation`.
    """

    def __init__(self, coordinator_key: bytes | None, secure: bool) -> None:
        self.secure = secure  # CURVE on: senders are checked by key
        self.coordinator = (coordinator_key or b"").decode()
        self.configured = False  # KV cache allocated (kept across chains)
        self.num_blocks = 0
        self.in_chain = False  # part of the coordinator's current chain
        self.generation = 0
        self.limits: PlanLimits | None = None
        # Before Configure only the coordinator may send steps; then the upstream hop.
        self.upstream = self.coordinator
        self.ring_upstream = ""

    def blocks_to_allocate(self, offered: int) -> bool:
        """True when the KV cache is still to be allocated. A stage that holds one keeps it
        across chains and coordinators: it takes any count up to what it holds and uses
        the first blocks (vLLM's BlockPool hands out ids below its count, plan_validation
        refuses any id at or above the count of the current Configure, and the runner
        indexes the tensors it allocated, larger ones, by id). More than it holds is
        refused; it offers no more (offered_kv_bytes)."""
        if not self.configured:
            return True
        if offered > self.num_blocks:
            raise ValueError(
                f"this stage holds a KV cache of {self.num_blocks} blocks and cannot take "
                f"{offered} without allocating it again; restart it"
            )
        return False

    def admit_keys(self, upstream_key: str, ring_upstream_key: str) -> set[bytes]:
        """Take a Configure's upstream keys; the keys the activation socket admits from now."""
        self.upstream = upstream_key or self.coordinator
        self.ring_upstream = ring_upstream_key
        allowed = {self.coordinator.encode(), self.upstream.encode()}
        if ring_upstream_key:
            allowed.add(ring_upstream_key.encode())
        return allowed

    def step_refusal(self, step: wire.Step, sender: str | None) -> Refusal | None:
        """Why a Step is not run (None: run it); sender is the frame's key, None without CURVE."""
        if self.secure and sender != self.upstream:
            return "unauthorized", "a step from a peer that is not the upstream hop"
        if not self.in_chain or step.generation != self.generation or self.limits is None:
            return "stale", (
                f"step {step.step_id} of generation {step.generation} "
                f"(this stage: {self.generation}, in chain: {self.in_chain})"
            )
        return None

    def tokens_refusal(self, msg: wire.Tokens, sender: str | None, fed: bool) -> Refusal | None:
        """Why ring Tokens are not taken (None: take them); fed: this stage waits for tokens."""
        if not fed or self.limits is None:
            return "stale", f"ring tokens of step {msg.step_id} for a stage not fed"
        from_coordinator = msg.failed and sender == self.coordinator  # a step failed on the way
        if self.secure and sender != self.ring_upstream and not from_coordinator:
            return "unauthorized", "ring tokens from a peer not the last stage"
        return None
