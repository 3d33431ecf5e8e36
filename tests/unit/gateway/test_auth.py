"""API-key checks."""

from __future__ import annotations

import pytest

from services.gateway.auth import authenticate
from services.gateway.errors import APIError

KEYS = ["alpha-key", "beta-key"]


@pytest.mark.parametrize(
    ("headers", "label"),
    [
        ({"authorization": "Bearer alpha-key"}, "key-0"),
        ({"authorization": "bearer beta-key"}, "key-1"),
    ],
)
def test_valid_keys_get_a_label_not_the_secret(headers: dict[str, str], label: str) -> None:
    assert authenticate(headers, KEYS) == label


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Basic alpha-key"},
        {"authorization": "Bearer alpha"},
        {"authorization": "Bearer alpha-key-and-more"},
    ],
)
def test_missing_or_wrong_keys_are_401(headers: dict[str, str]) -> None:
    with pytest.raises(APIError) as info:
        authenticate(headers, KEYS)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")


def test_no_keys_configured_means_no_auth() -> None:
    assert authenticate({}, []) is None
