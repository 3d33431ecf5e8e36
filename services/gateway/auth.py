"""API-key check: Bearer tokens compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from services.gateway.errors import APIError


def authenticate(headers: Mapping[str, str], api_keys: Sequence[str]) -> str | None:
    """A label for the caller's key ("key-<i>", never the secret); None when auth is off.

    Raises 401 when keys are configured and the Authorization header lacks a valid one.
    """
    if not api_keys:
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "missing API key: send `Authorization: Bearer <key>`",
            code="invalid_api_key",
        )
    match: int | None = None
    presented = token.encode()
    for i, key in enumerate(api_keys):
        # Compare against every key so timing does not reveal which prefix matched.
        if hmac.compare_digest(presented, key.encode()):
            match = i
    if match is None:
        raise APIError(401, "incorrect API key provided", code="invalid_api_key")
    return f"key-{match}"
