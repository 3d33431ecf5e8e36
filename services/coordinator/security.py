"""The coordinator's keys, ZAP handler and the security facts its I/O loop needs.

Kept apart from server.py so the socket loop only asks: who sent this
(authorizer), may the engine take this Generate (generate_limits), which key
does a stage's socket need (client_of_stage, with_chain_keys).
"""

from __future__ import annotations

from typing import Any

import msgspec
import zmq

from services.coordinator.authorization import Authorizer
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.validation import GenerateLimits, model_vocab_size
from shared import curve, wire
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings


def refusal_for_peer(reason: str, engine_fingerprint: str) -> str:
    """A registration refusal safe to send: never the coordinator's engine fingerprint."""
    return reason.replace(engine_fingerprint, "see the coordinator's log")


class CoordinatorSecurity:
    """Keys, allow-list and authorizer; built on the main thread, used by the I/O thread."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        engine: EngineSettings,
        transport: TransportSettings,
        ctx: zmq.Context,  # type: ignore[type-arg]
    ) -> None:
        if bool(transport.secret_key) != bool(settings.authorized_keys):
            raise curve.KeyFileError(
                "CURVE on the coordinator needs both --secret-key (LAYERBUS_SECRET_KEY) and "
                "--authorized-keys (LAYERBUS_AUTHORIZED_KEYS), or neither"
            )
        self.keys = curve.ServiceKeys.load(transport.secret_key, "", needs_coordinator=False)
        curve.check_bind(settings.bind, self.keys.enabled, transport.insecure, "coordinator")
        peers = curve.load_authorized_keys(settings.authorized_keys) if self.keys.enabled else None
        self.authorizer = Authorizer(peers)
        self.auth = None
        if peers is not None:
            allow = curve.AllowList(set(peers), label="coordinator")
            self.auth = curve.start_authenticator(ctx, allow)
        self.vocab_size = model_vocab_size(engine.resolved_model())

    def generate_limits(self, max_model_len: int) -> GenerateLimits:
        return GenerateLimits(vocab_size=self.vocab_size, max_model_len=max_model_len)

    def public_key(self) -> str:
        return "" if self.keys.own is None else self.keys.own.public.decode()

    def client_of_stage(self, record: Any) -> curve.CurveOptions | None:
        """Options for the coordinator's DEALER to a stage's activation socket."""
        if not self.keys.enabled:
            return None
        key = self.authorizer.stage_key(record.name)
        return self.keys.client_of(key.encode() if key else None)

    def with_chain_keys(self, msg: wire.Configure, chain: list[str]) -> wire.Configure:
        """Configure plus the public keys of the stage's upstream and next hop."""
        if not self.keys.enabled:
            return msg
        index = msg.stage_index
        upstream = (
            self.public_key() if index == 0 else self.authorizer.stage_key(chain[index - 1]) or ""
        )
        nxt = self.authorizer.stage_key(chain[index + 1]) or "" if index + 1 < len(chain) else ""
        ring: dict[str, str] = {}
        if len(chain) > 1 and index == 0:
            ring["ring_upstream_key"] = self.authorizer.stage_key(chain[-1]) or ""
        if len(chain) > 1 and index == len(chain) - 1:
            ring["ring_next_key"] = self.authorizer.stage_key(chain[0]) or ""
        return msgspec.structs.replace(msg, upstream_key=upstream, next_key=nxt, **ring)

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
