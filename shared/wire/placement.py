"""Stage <-> coordinator before a stage holds layers: placement's conversation.

A stage started without --layers loads nothing at first. It sends Offer (its device,
the memory it may fill, its measured speed) about once a second until the coordinator
answers with Assign; each Offer is answered at once with OfferSeen, whose echo gives
the stage its round trip to the coordinator for the next Offer. A placed stage that
is serving may receive Assign again when the coordinator re-plans: it then reloads.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)]


class Offer(msgspec.Struct):
    """Stage -> coordinator: a stage without a layer range offers its capacity."""

    name: str
    pid: int
    num_layers: int
    engine_fingerprint: str
    device: str
    memory_bytes: Annotated[int, msgspec.Meta(ge=0)]
    decode_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)]  # one layer, decode size
    prefill_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)]  # one layer, prefill size
    head_s: Seconds | None = None  # final norm + LM head at decode size, when timed
    link_s: Seconds | None = None  # round trip to the coordinator, once measured
    memory_why: str = ""  # how the memory figure came about (for /status and the log)
    sent_at: float = 0.0  # the stage's monotonic clock; OfferSeen echoes it


class OfferSeen(msgspec.Struct):
    """Coordinator -> stage: the offer arrived; no range yet (why: what the plan waits for)."""

    echo: float
    why: str = ""


class Assign(msgspec.Struct):
    """Coordinator -> stage: load layers [layer_start, layer_end) and register with them."""

    layer_start: int
    layer_end: int
    standby: bool = False  # the range is covered already; the stage waits as a standby
    reason: str = ""  # the planner's words, logged by the stage
