"""The stage's control plane: registration, Configure/Reset/Shutdown, Leave.

All on the control DEALER to the coordinator, from the stage's main thread.
The stage registers until it is configured, and again whenever the
coordinator has been silent for `LAYERBUS_HEARTBEAT_MISSES` intervals (a
restarted coordinator learns of it). Configure allocates the KV cache once
(later chains, and later coordinators, may use fewer of its blocks; it offers no more
than it holds from then on), drops requests the new chain does
not hold, admits the upstream keys and points the activation hop at its next
hop and ring; Reset makes the stage a standby. On SIGTERM/SIGINT it sends
Leave and the process exits; the coordinator hands its work over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from services.stage.hop import ActivationHop
from services.stage.membership import Membership, announce_due, offered_kv_bytes
from services.stage.plan_validation import plan_limits
from services.stage.worker import StageWorker
from shared import codec, curve, wire
from shared.dropped import drop
from shared.process_age import age_note
from shared.vllm_bridge.kv_codec import decode_kv, encode_kv

log = logging.getLogger("layerbus.stage")


@dataclass(frozen=True)
class StageIdentity:
    """What a stage tells the coordinator about itself besides its worker; read-only."""

    name: str
    start: int
    end: int
    num_layers: int
    address: str  # the activation ROUTER other stages dial
    fingerprint: str  # the engine shape every process must agree on
    metrics_url: str
    dtype: str
    max_model_len: int
    placed: bool = False  # the coordinator chose the range and may move it (no --layers)
    # What a placed stage measured and offered; sent again in Register, so a coordinator
    # restarted since the stage was placed can still re-plan it.
    offer: wire.Offer | None = None


def register_message(identity: StageIdentity, worker: StageWorker) -> wire.Register:
    """The Register a stage sends: its layers, address, KV cache spec and capacity."""
    layers_loaded, other_parameters = worker.loaded_summary()
    return wire.Register(
        name=identity.name,
        layer_start=identity.start,
        layer_end=identity.end,
        num_layers=identity.num_layers,
        data_address=identity.address,
        kv_cache_specs=encode_kv(worker.kv_cache_spec()),
        available_kv_bytes=worker.available_kv_bytes(),
        kv_cache_layouts=worker.kv_cache_layouts(),
        engine_fingerprint=identity.fingerprint,
        pid=os.getpid(),
        layers_loaded=layers_loaded,
        other_parameters=other_parameters,
        metrics=identity.metrics_url,
        dtype=identity.dtype,
        max_model_len=identity.max_model_len,
        placed=identity.placed,
        offer=identity.offer if identity.placed else None,
    )


class ControlPlane:
    """The stage's side of membership (register, Configure, Reset, Leave); main thread."""

    def __init__(
        self,
        identity: StageIdentity,
        worker: StageWorker,
        chain: Membership,
        hop: ActivationHop,
        control: zmq.Socket,  # type: ignore[type-arg]
        allow: curve.AllowList,
        heartbeat_interval_s: float,
        heartbeat_misses: int,
    ) -> None:
        self.identity = identity
        self.name = identity.name
        self.worker = worker
        self.chain = chain
        self.hop = hop
        self.control = control
        self.allow = allow  # ZAP allow-list of the activation ROUTER (with CURVE)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_misses = heartbeat_misses
        self.register: wire.Register | None = None
        self.last_register = 0.0
        self.last_heard = time.monotonic()
        self.leaving = ""
        self.reload_to = ""  # a placed stage moved by a re-plan: reload for this range

    # ------------------------------------------------------------ registration

    def begin(self) -> wire.Register:
        """Measure what the stage offers, once, before the first registration."""
        self.register = register_message(self.identity, self.worker)
        return self.register

    def announce(self, now: float) -> None:
        """Send Register if it is due (unconfigured, or the coordinator fell silent)."""
        due = announce_due(
            self.chain.configured,
            now,
            self.last_heard,
            self.last_register,
            self.heartbeat_interval_s,
            self.heartbeat_misses,
        )
        if not due:
            return
        if self.chain.configured:
            # Keep serving: a coordinator that merely paused ignores this,
            # a restarted one learns about us again.
            log.warning("%s: coordinator silent; announcing again", self.name)
        register = self.register or self.begin()
        self.control.send_multipart(codec.encode(register))
        self.last_register = now

    def request_leave(self, reason: str) -> None:
        """Signal handler: finish the current step, tell the coordinator, exit."""
        self.leaving = reason

    def leave(self) -> None:
        """Tell the coordinator this stage is going; it hands the stage's work over."""
        log.info("%s: leaving (%s); the coordinator hands its work over", self.name, self.leaving)
        msg = wire.Leave(name=self.name, pid=os.getpid(), reason=self.leaving)
        with contextlib.suppress(zmq.ZMQError):
            self.control.send_multipart(codec.encode(msg), zmq.NOBLOCK)

    # ------------------------------------------------------------ messages

    def on_control(self, frames: list[Any]) -> bool:
        """Handle one control message; True means shut down."""
        try:
            msg = codec.decode(frames)
        except wire.WireError as err:
            drop("stage-control", "malformed", str(err))
            return False
        self.last_heard = time.monotonic()
        if isinstance(msg, wire.Configure):
            self.configure(msg)
        elif isinstance(msg, wire.Reset):
            self.reset(msg)
        elif isinstance(msg, wire.Shutdown):
            log.info("%s: shutdown requested: %s", self.name, msg.reason)
            return True
        elif isinstance(msg, wire.Assign):
            return self.reassign(msg)
        return False

    def reassign(self, msg: wire.Assign) -> bool:
        """A re-plan moves this stage: True (stop, then reload) unless --layers pins it."""
        if not self.identity.placed:
            log.warning("%s: ignoring a new range: --layers pins this stage", self.name)
            return False
        log.warning(
            "%s: the coordinator moves this stage to layers %d:%d: %s",
            self.name,
            msg.layer_start,
            msg.layer_end,
            msg.reason,
        )
        self.reload_to = f"{msg.layer_start}:{msg.layer_end}"
        return True

    def configure(self, msg: wire.Configure) -> None:
        """Join a chain: KV cache, live requests, keys, next hop and ring; reply Configured."""
        error = ""
        num_blocks = 0
        try:
            config = decode_kv(msg.kv_cache_config)
            num_blocks = int(config.num_blocks)
            if self.chain.blocks_to_allocate(num_blocks):
                self.worker.configure(config, msg.kv_cache_layout)
                self.chain.num_blocks = num_blocks
                self._offer_held(config)
            dropped = self.worker.drop_requests(keep=set(msg.live_request_ids))
            if dropped:
                log.info("%s: dropped %d requests of an earlier chain", self.name, dropped)
            self.chain.generation = msg.generation
            self.chain.in_chain = True
            self.chain.limits = plan_limits(self.worker.vllm_config, config)
            if self.chain.secure:
                self.allow.set(self.chain.admit_keys(msg.upstream_key, msg.ring_upstream_key))
            self.hop.open_next(msg.next_address, msg.next_key)
            self.hop.open_ring(
                msg.generation,
                fed=self.worker.is_first and not self.worker.is_last,
                address=msg.ring_address,
                key=msg.ring_next_key,
            )
            self.chain.configured = True
            log.info(
                "%s: stage %d of %d, %d KV blocks%s, next hop %s%s",
                self.name,
                msg.stage_index + 1,
                msg.num_stages,
                num_blocks,
                f" (the first of the {self.chain.num_blocks} it holds)"
                if num_blocks < self.chain.num_blocks
                else "",
                msg.next_address or "coordinator",
                age_note(),
            )
        except Exception as err:  # reported to the coordinator, which stops start-up
            log.exception("%s: configure failed", self.name)
            error = f"{type(err).__name__}: {err}"
        reply = wire.Configured(name=self.name, num_blocks=num_blocks, error=error)
        self.control.send_multipart(codec.encode(reply))

    def _offer_held(self, config: Any) -> None:
        """From now on register with no more KV memory than the cache just allocated."""
        register = self.register or self.begin()
        # vLLM's tensors of one config alias a single allocation of `size` bytes.
        held = max((int(t.size) for t in config.kv_cache_tensors), default=0)
        offered = offered_kv_bytes(register.available_kv_bytes, held)
        self.register = msgspec.structs.replace(register, available_kv_bytes=offered)

    def reset(self, msg: wire.Reset) -> None:
        """Leave the chain: forget every request and the next hop, wait as a standby."""
        dropped = self.worker.drop_requests(keep=set()) if self.chain.configured else 0
        self.hop.open_next("", "")
        self.hop.open_ring(msg.generation, fed=False, address="", key="")
        self.chain.in_chain = False
        self.chain.generation = msg.generation
        log.info("%s: standby (dropped %d requests)", self.name, dropped)
