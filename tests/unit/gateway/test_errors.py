"""services/gateway/errors.py: OpenAI-shaped errors and the status a failed generation gets."""

from __future__ import annotations

from services.gateway.errors import generation_failed


def test_a_generation_the_request_caused_to_fail_is_a_400() -> None:
    err = generation_failed("token id 99999 is outside the vocabulary", invalid=True)
    assert (err.status, err.code, err.type) == (400, "invalid_request", "invalid_request_error")


def test_a_generation_the_service_failed_is_a_503() -> None:
    err = generation_failed("stage-b is gone", invalid=False)
    assert (err.status, err.code) == (503, "generation_failed")
    assert err.body()["error"]["message"] == "stage-b is gone"
