"""The ops room's HTTP clients of the registry and bidding APIs, against httpx.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from services.opsroom.registry_client import (
    BiddingClient,
    LoginRefusedError,
    RegistryClient,
    TokenExpiredError,
    service_base_url,
)

BASE = "http://registry.test"


def registry(handler: httpx.MockTransport, cache_s: float = 60.0) -> RegistryClient:
    client = RegistryClient(BASE, cache_s)
    client.http = httpx.AsyncClient(transport=handler)
    return client


def token_answer(role: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/token"
        form = dict(x.split("=") for x in request.content.decode().split("&"))
        if form["password"] != "right-password":
            return httpx.Response(401, json={"detail": "wrong"})
        return httpx.Response(200, json={"access_token": "t-1", "expires_in": 600, "role": role})

    return httpx.MockTransport(handle)


async def test_only_operators_may_log_in() -> None:
    done = await registry(token_answer("operator")).login("op-1", "right-password")
    assert (done.principal_id, done.token, done.expires_in_s) == ("op-1", "t-1", 600)
    with pytest.raises(LoginRefusedError, match="not an operator"):
        await registry(token_answer("installer")).login("inst-1", "right-password")
    with pytest.raises(LoginRefusedError, match="wrong password"):
        await registry(token_answer("operator")).login("op-1", "bad-password")


async def test_visible_sites_are_asked_with_the_operators_token_and_cached() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.headers["Authorization"] == "Bearer old":
            return httpx.Response(401)
        return httpx.Response(200, json={"sites": [{"site_id": "villa-1"}]})

    client = registry(httpx.MockTransport(handle))
    assert list(await client.visible_sites("t-1", "operations")) == ["villa-1"]
    assert list(await client.visible_sites("t-1", "operations")) == ["villa-1"]
    assert len(calls) == 1
    assert calls[0].url.params["purpose"] == "operations"
    client.forget("t-1")
    await client.visible_sites("t-1", "operations")
    assert len(calls) == 2
    with pytest.raises(TokenExpiredError):
        await client.visible_sites("old", "operations")


async def test_bidding_plan_summary_or_the_reason_it_is_missing() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"plan_id": "p-1", "status": "OPTIMAL", "fallback": False})

    good = BiddingClient("http://bidding.test", httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    assert await good.latest_plan() == {
        "available": True,
        "plan_id": "p-1",
        "status": "OPTIMAL",
        "fallback": False,
    }

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "no plan yet"})

    none = BiddingClient("http://bidding.test", httpx.AsyncClient(transport=httpx.MockTransport(missing)))
    answer = await none.latest_plan()
    assert answer["available"] is False
    assert "404" in answer["why"]


def test_service_urls_come_from_the_setting_or_the_infra_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service_base_url("registry", "http://x:1/") == "http://x:1"
    infra = tmp_path / "infra.json"
    infra.write_text(json.dumps({"services": [{"name": "registry", "port": 4321}]}))
    monkeypatch.setenv("HYBRIDPOOL_INFRA_FILE", str(infra))
    assert service_base_url("registry", None) == "http://127.0.0.1:4321"
    with pytest.raises(RuntimeError, match="OPSROOM_BIDDING_URL is unset"):
        service_base_url("bidding", None)
