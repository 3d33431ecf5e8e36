"""Typed wire messages: every message that crosses a socket is declared in this package.

A message travels as a multipart ZeroMQ message: frame 0 is a one-byte type
tag, frame 1 the msgpack body of the Struct, frames 2.. optional raw tensor
buffers (see shared/tensor_frames.py). Receivers decode with a typed decoder
chosen by the tag (shared/codec.py); nothing is ever unpickled.

The messages are grouped by conversation; every one is re-exported here, so
users write `from shared import wire` and `wire.Generate`:
  sampling.py   SamplingSpec, StructuredSpec and the value ranges a request may carry
  generate.py   gateway <-> coordinator: Generate, Abort, Outputs, Accepted
  status.py     gateway <-> coordinator: StatusQuery, Status, StageStatus
  control.py    stage <-> coordinator: Register, Configure(d), Heartbeat, Reset, Leave, Shutdown
  placement.py  stage <-> coordinator before a stage holds layers: Offer, OfferSeen, Assign
  steps.py      the activation path: Step (StepPlan, tensors), Tokens, StepResult
"""

from __future__ import annotations

from shared.wire.control import (
    Configure,
    Configured,
    Heartbeat,
    Leave,
    Register,
    Reset,
    Shutdown,
)
from shared.wire.generate import (
    Abort,
    Accepted,
    Generate,
    Outputs,
    RequestOutput,
    TokenLogprob,
    TopLogprob,
)
from shared.wire.placement import Assign, Offer, OfferSeen
from shared.wire.sampling import (
    MAX_LOGPROBS,
    MAX_SEED,
    MAX_STOP_TOKEN_IDS,
    NonEmptyText,
    SamplingSpec,
    StructuredSpec,
    TokenId,
)
from shared.wire.status import StageStatus, Status, StatusQuery
from shared.wire.steps import (
    PLACEHOLDER,
    CachedRequestsPlan,
    GrammarMask,
    NewRequestPlan,
    ResumedRequestPlan,
    SampledLogprobs,
    Step,
    StepPlan,
    StepResult,
    TensorMeta,
    Tokens,
)


class WireError(ValueError):
    """A frame that is not a valid layerbus message; the receiver drops it."""


__all__ = [
    "MAX_LOGPROBS",
    "MAX_SEED",
    "MAX_STOP_TOKEN_IDS",
    "PLACEHOLDER",
    "Abort",
    "Accepted",
    "Assign",
    "CachedRequestsPlan",
    "Configure",
    "Configured",
    "Generate",
    "GrammarMask",
    "Heartbeat",
    "Leave",
    "NewRequestPlan",
    "NonEmptyText",
    "Offer",
    "OfferSeen",
    "Outputs",
    "Register",
    "RequestOutput",
    "Reset",
    "ResumedRequestPlan",
    "SampledLogprobs",
    "SamplingSpec",
    "Shutdown",
    "StageStatus",
    "Status",
    "StatusQuery",
    "Step",
    "StepPlan",
    "StepResult",
    "StructuredSpec",
    "TensorMeta",
    "TokenId",
    "TokenLogprob",
    "Tokens",
    "TopLogprob",
    "WireError",
]
