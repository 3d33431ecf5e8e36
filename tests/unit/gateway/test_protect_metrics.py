"""/metrics behind the API keys when protect_metrics is on."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit.gateway.conftest import RunningGateway


def test_metrics_need_a_key_when_protected(start_gateway: Callable[..., RunningGateway]) -> None:
    gw = start_gateway(api_keys=["sekret"], protect_metrics=True)
    with gw.client() as http:
        assert http.get("/metrics").status_code == 401
        ok = {"Authorization": "Bearer sekret"}
        assert http.get("/metrics", headers=ok).status_code == 200
        assert http.get("/health").status_code == 200
