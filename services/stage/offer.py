"""A stage without --layers: offer this host's capacity and wait for the range to load.

Runs before the stage loads anything. It measures what placement weighs (the memory
it may fill, one decoder layer's forward at decode and prefill sizes: capacity.py),
then sends wire.Offer to the coordinator about once a second until wire.Assign names
its layer range. The coordinator answers each offer with wire.OfferSeen; its echo
times the round trip, which the next offer carries as the stage's link time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import zmq

from services.stage.capacity import StageOffer, probe_capacity
from services.stage.settings import StageSettings
from shared import codec, curve, wire
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings
from shared.sockets import make_socket

log = logging.getLogger("layerbus.stage")

OFFER_INTERVAL_S = 1.0
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class Assignment:
    """The range the coordinator gave this stage (immutable)."""

    start: int
    end: int
    standby: bool
    reason: str

    @property
    def layers(self) -> str:
        return f"{self.start}:{self.end}"


def measure(stage: StageSettings, engine: EngineSettings, num_layers: int) -> StageOffer:
    """This host's capacity for the model (logs what it found)."""
    from shared.platform_defaults import detect_platform, select_device

    select_device(stage.device)
    if stage.threads:
        import torch

        torch.set_num_threads(stage.threads)
    model = engine.resolved_model()
    with open(f"{model}/config.json") as f:
        config = json.load(f)
    dtype = engine.platform_choice(platform=detect_platform()).dtype
    started = time.monotonic()
    found = probe_capacity(config, dtype, stage.memory_gb, stage.gpu_memory_utilization)
    log.info(
        "capacity: %s, %.2f GiB for weights and KV cache (%s); one of %d layers takes "
        "%.3f ms at decode, %.3f ms at prefill size (measured in %.1f s)",
        found.device,
        found.memory.bytes / (1 << 30),
        found.memory.why,
        num_layers,
        found.decode_s * 1000,
        found.prefill_s * 1000,
        time.monotonic() - started,
    )
    return found


def offer_message(
    name: str, num_layers: int, fingerprint: str, found: StageOffer, link_s: float | None
) -> wire.Offer:
    import os

    return wire.Offer(
        name=name,
        pid=os.getpid(),
        num_layers=num_layers,
        engine_fingerprint=fingerprint,
        device=found.device,
        memory_bytes=found.memory.bytes,
        decode_s=found.decode_s,
        prefill_s=found.prefill_s,
        head_s=found.head_s,
        link_s=link_s,
        memory_why=found.memory.why,
        sent_at=time.monotonic(),
    )


def wait_for_assignment(
    name: str,
    offer: wire.Offer,
    stage: StageSettings,
    transport: TransportSettings,
    stopping: threading.Event,
) -> Assignment | None:
    """Offer until the coordinator assigns a range; None if stopped first."""
    keys = curve.ServiceKeys.load(transport.secret_key, transport.coordinator_key, True)
    ctx = zmq.Context()
    sock = make_socket(
        ctx,
        zmq.DEALER,
        transport,
        identity=name.encode(),
        curve=keys.client_of(keys.coordinator),
    )
    sock.connect(stage.coordinator)
    log.info("%s: offering this capacity to %s; waiting for a layer range", name, stage.coordinator)
    link_s: float | None = None
    why, last_progress, next_offer = "", time.monotonic(), 0.0
    try:
        while not stopping.is_set():
            now = time.monotonic()
            if now >= next_offer:
                offer.link_s, offer.sent_at = link_s, now
                sock.send_multipart(codec.encode(offer))
                next_offer = now + OFFER_INTERVAL_S
            if now - last_progress >= PROGRESS_EVERY_S:
                heard = why or "no answer from the coordinator yet; check --coordinator"
                log.info("%s: still waiting for a layer range: %s", name, heard)
                last_progress = now
            if not sock.poll(int(max(0.0, next_offer - time.monotonic()) * 1000) + 1):
                continue
            try:
                msg = codec.decode(sock.recv_multipart())
            except wire.WireError:
                continue
            if isinstance(msg, wire.OfferSeen):
                link_s = max(0.0, time.monotonic() - msg.echo)
                why = msg.why or "the coordinator is planning"
            elif isinstance(msg, wire.Assign):
                return Assignment(msg.layer_start, msg.layer_end, msg.standby, msg.reason)
        return None
    finally:
        sock.close(0)
        ctx.term()
