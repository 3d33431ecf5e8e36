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


class Offering:
    """The offer socket of a stage placed by the coordinator.

    Main thread: wait() offers until a range is assigned. Then beacon() hands the
    socket to its own thread, which repeats the offer each second while the stage
    loads its layers (so the coordinator sees a stage die while loading); close()
    stops it once the stage registered. The socket's identity is NAME#offer, apart
    from the stage's control socket.
    """

    def __init__(
        self, name: str, offer: wire.Offer, stage: StageSettings, transport: TransportSettings
    ) -> None:
        keys = curve.ServiceKeys.load(transport.secret_key, transport.coordinator_key, True)
        self.name = name
        self.offer = offer
        self.coordinator = stage.coordinator
        self.ctx = zmq.Context()
        self.sock = make_socket(
            self.ctx,
            zmq.DEALER,
            transport,
            identity=f"{name}#offer".encode(),
            curve=keys.client_of(keys.coordinator),
        )
        self.sock.connect(stage.coordinator)
        self.link_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _send(self) -> None:
        self.offer.link_s, self.offer.sent_at = self.link_s, time.monotonic()
        self.sock.send_multipart(codec.encode(self.offer))

    def wait(self, stopping: threading.Event) -> Assignment | None:
        """Offer until the coordinator assigns a range; None if stopped first."""
        log.info(
            "%s: offering this capacity to %s; waiting for a layer range",
            self.name,
            self.coordinator,
        )
        why, last_progress, next_offer = "", time.monotonic(), 0.0
        while not stopping.is_set():
            now = time.monotonic()
            if now >= next_offer:
                self._send()
                next_offer = now + OFFER_INTERVAL_S
            if now - last_progress >= PROGRESS_EVERY_S:
                heard = why or "no answer from the coordinator yet; check --coordinator"
                log.info("%s: still waiting for a layer range: %s", self.name, heard)
                last_progress = now
            if not self.sock.poll(int(max(0.0, next_offer - time.monotonic()) * 1000) + 1):
                continue
            try:
                msg = codec.decode(self.sock.recv_multipart())
            except wire.WireError:
                continue
            if isinstance(msg, wire.OfferSeen):
                self.link_s = max(0.0, time.monotonic() - msg.echo)
                why = msg.why or "the coordinator is planning"
            elif isinstance(msg, wire.Assign):
                return Assignment(msg.layer_start, msg.layer_end, msg.standby, msg.reason)
            elif isinstance(msg, wire.Shutdown):
                raise OfferRefused(msg.reason)
        return None

    def beacon(self) -> None:
        """Repeat the offer each second on a thread of its own until close()."""
        self._thread = threading.Thread(target=self._beat, name="offer-beacon", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(OFFER_INTERVAL_S):
            self._send()
            while self.sock.poll(0):
                self.sock.recv_multipart()  # Assign repeats: the range is known

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close(0)
        self.ctx.term()


class OfferRefused(RuntimeError):
    """The coordinator refused this stage's offer (another model or engine settings)."""


# The offer a placed stage measured, kept for a reload (services/stage/reload.py): the
# reloaded process repeats it while loading, without measuring again.
OFFER_ENV = "LAYERBUS_STAGE_OFFER"


def stage_name(stage: StageSettings, transport: TransportSettings) -> str:
    """A placed stage's name: --name, else its CURVE key's name, else HOST-PID."""
    import os

    from services.stage.naming import default_stage_name

    if stage.name:
        return stage.name
    if transport.secret_key:
        return os.path.basename(transport.secret_key).removesuffix(".key_secret")
    return default_stage_name()


def place_this_stage(
    stage: StageSettings,
    engine: EngineSettings,
    transport: TransportSettings,
    stopping: threading.Event,
) -> tuple[StageSettings, Offering] | None:
    """The settings of the range the coordinator gives this stage, and its beaconing offer.

    A stage reloaded for a new plan (services/stage/reload.py; its range in --layers)
    repeats its earlier offer while it loads; one started without --layers measures
    and offers until assigned. None if stopped while waiting.
    """
    import os

    import msgspec

    from services.stage.reload import reloaded
    from shared.engine_settings import model_num_layers

    name = stage_name(stage, transport)
    saved = os.environ.get(OFFER_ENV, "")
    if reloaded() and stage.layers and saved:
        offer = msgspec.json.decode(saved, type=wire.Offer)
        offer.pid = os.getpid()
        offering = Offering(name, offer, stage, transport)
        layers = stage.layers
    else:
        num_layers = model_num_layers(engine.resolved_model())
        found = measure(stage, engine, num_layers)
        offer = offer_message(name, num_layers, engine.fingerprint(), found, None)
        offering = Offering(name, offer, stage, transport)
        try:
            assignment = offering.wait(stopping)
        except BaseException:
            offering.close()
            raise
        if assignment is None:
            offering.close()
            return None
        log.info(
            "%s: the coordinator assigns layers %s%s: %s",
            name,
            assignment.layers,
            " as a standby" if assignment.standby else "",
            assignment.reason,
        )
        layers = assignment.layers
    offering.beacon()
    os.environ[OFFER_ENV] = msgspec.json.encode(offer).decode()
    return stage.model_copy(update={"layers": layers, "name": name}), offering
