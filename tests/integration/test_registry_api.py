"""Registry HTTP API on a real Redis and broker: every role against every endpoint, consent, audit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from hybridpool_shared import topics
from hybridpool_shared.timeutil import utc_now
from services.registry.api import Registry
from services.registry.app import build, flush_outbox
from services.registry.domain import SiteMasterDataIn
from services.registry.settings import RegistrySettings
from tests.infra import Infra, fail_once, unique, wait_for_records

pytestmark = pytest.mark.integration

PRINCIPALS = {
    "inst-a": "installer",
    "inst-b": "installer",
    "op-a": "operator",
    "op-b": "operator",
    "aud": "auditor",
    "owner-a": "user",
    "owner-b": "user",
}
SECRET = "test-secret-{}-0123456789"


@dataclass
class Api:
    """A registry app on the test infrastructure with a token per principal."""

    client: httpx.AsyncClient
    tokens: dict[str, str]
    prefix: str
    redis_url: str
    registry: Registry

    async def call(self, who: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if who:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return await self.client.request(method, path, headers=headers, **kw)


def site_body(site_id: str, owner: str = "owner-a", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "site_id": site_id,
        "make_model": "Acme Hybrid 5",
        "location": {
            "address": "Skolevej 1",
            "latitude_deg": 55.4,
            "longitude_deg": 8.7,
            "price_area": "DK1",
        },
        "hp_heat_power_kw": 5.0,
        "hp_electric_power_kw": 1.6,
        "boiler_power_kw": 33.0,
        "boiler_efficiency": 0.95,
        "min_run_minutes": 15,
        "lockout_minutes": 15,
        "dhw_tank_l": 180,
        "control_options": ["sg_ready", "evu"],
        "meter_number": "571313100000000001",
        "owner_id": owner,
    }
    body.update(changes)
    return body


@pytest.fixture(scope="module")
async def api(infra: Infra) -> AsyncIterator[Api]:
    prefix = unique("registry-test")
    settings = RegistrySettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        redis_url=infra.redis_url,
        key_prefix=prefix,
        principals_json=json.dumps(
            [{"id": i, "role": r, "secret": SECRET.format(i)} for i, r in PRINCIPALS.items()]
        ),
    )
    service = build(settings)
    async with service.api.router.lifespan_context(service.api):
        transport = httpx.ASGITransport(app=service.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            tokens = {}
            for principal in PRINCIPALS:
                form = {"grant_type": "password", "username": principal, "password": SECRET.format(principal)}
                response = await client.post("/token", data=form)
                assert response.status_code == 200, response.text
                tokens[principal] = response.json()["access_token"]
            yield Api(client, tokens, prefix, infra.redis_url, service.api.state.registry)


async def make_site(api: Api, owner: str = "owner-a", consent_for: tuple[str, ...] = ("op-a",)) -> str:
    """A fresh site installed by inst-a, owned by owner, with 'balance' consents for the given actors."""
    site_id = unique("villa")
    assert (await api.call("inst-a", "POST", "/sites", json=site_body(site_id, owner))).status_code == 201
    expires = (utc_now() + timedelta(days=30)).isoformat()
    for actor in consent_for:
        grant = {"actor_id": actor, "purpose": "balance", "expires_at": expires}
        assert (await api.call(owner, "POST", f"/sites/{site_id}/consents", json=grant)).status_code == 201
    return site_id


STATUS = {
    "gateway": "ok",
    "data_link": "ok",
    "heat_pump": "ok",
    "maintenance": "none",
    "sg_ready_mode": 2,
    "reported_at": "2026-01-01T00:00:00Z",
}
SETTINGS = {"wanted_indoor_temp_c": 21.5, "wanted_dhw_temp_c": 50, "control_location": "remote"}

# endpoint name -> (method, path, body builder, principals allowed); "{s}" is a fresh site of inst-a/owner-a.
ENDPOINTS: dict[str, tuple[str, str, Any, set[str]]] = {
    "list sites": ("GET", "/sites", None, {"inst-a", "inst-b", "op-a", "op-b", "owner-a", "owner-b"}),
    "create site": ("POST", "/sites", lambda s: site_body(unique("new")), {"inst-a", "inst-b"}),
    "read site": ("GET", "/sites/{s}", None, {"inst-a", "op-a", "owner-a"}),
    "update site": ("PUT", "/sites/{s}", lambda s: site_body(s, make_model="Acme 7"), {"inst-a"}),
    "delete site": ("DELETE", "/sites/{s}", None, {"inst-a"}),
    "read settings": ("GET", "/sites/{s}/settings?purpose=balance", None, {"op-a", "owner-a"}),
    "write settings": ("PUT", "/sites/{s}/settings?purpose=balance", lambda s: SETTINGS, {"op-a", "owner-a"}),
    "read status": ("GET", "/sites/{s}/status?purpose=balance", None, {"op-a", "owner-a"}),
    "write status": ("PUT", "/sites/{s}/status?purpose=balance", lambda s: STATUS, {"op-a"}),
    "list consents": ("GET", "/sites/{s}/consents", None, {"owner-a"}),
    "grant consent": (
        "POST",
        "/sites/{s}/consents",
        lambda s: {"actor_id": "op-b", "purpose": "dispatch", "expires_at": "2099-01-01T00:00:00Z"},
        {"owner-a"},
    ),
    "revoke consent": ("DELETE", "/sites/{s}/consents/op-a/balance", None, {"owner-a"}),
    "read audit": ("GET", "/audit?limit=5", None, {"aud"}),
    "verify audit": ("GET", "/audit/verify", None, {"aud"}),
    "record operation": (
        "POST",
        "/audit/operations",
        lambda s: {"source": "opsroom", "action": "site.exclude", "site_id": s},
        {"op-a", "op-b"},
    ),
    "import sites": ("POST", "/sites/import", lambda s: [site_body(unique("imp"))], {"inst-a", "inst-b"}),
    "export sites": ("GET", "/sites/export", None, {"inst-a", "inst-b"}),
}
SUCCESS = {"POST": {200, 201}, "GET": {200}, "PUT": {200}, "DELETE": {200, 204}}


@pytest.mark.parametrize("principal", sorted(PRINCIPALS))
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
async def test_every_role_against_every_endpoint(api: Api, endpoint: str, principal: str) -> None:
    method, path, body, allowed = ENDPOINTS[endpoint]
    site_id = await make_site(api)
    response = await api.call(principal, method, path.format(s=site_id), json=body(site_id) if body else None)
    if principal in allowed:
        assert response.status_code in SUCCESS[method], response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["detail"]


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
async def test_every_endpoint_requires_a_valid_token(api: Api, endpoint: str) -> None:
    method, path, body, _ = ENDPOINTS[endpoint]
    url = path.format(s="villa-x")
    payload = body("villa-x") if body else None
    assert (await api.call(None, method, url, json=payload)).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert (await api.client.request(method, url, json=payload, headers=forged)).status_code == 401


async def test_denials_are_audited(api: Api) -> None:
    site_id = await make_site(api)
    assert (await api.call("op-b", "GET", f"/sites/{site_id}/settings?purpose=balance")).status_code == 403
    page = (await api.call("aud", "GET", f"/audit?site_id={site_id}&limit=1000")).json()
    denied = [r for r in page["records"] if r["outcome"] == "denied"]
    assert [(r["actor_id"], r["action"]) for r in denied] == [("op-b", "operational.read")]


async def test_a_change_is_never_made_without_its_audit_record(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is written first: when it fails, the change is not made, and a retry makes both."""
    site_id = unique("villa")
    store = api.registry.store
    monkeypatch.setattr(
        store, "append_audit", fail_once(store.append_audit, ConnectionError("redis unavailable"))
    )
    with pytest.raises(ConnectionError):
        await api.call("inst-a", "POST", "/sites", json=site_body(site_id))
    assert await store.site(site_id) is None
    assert (await api.call("inst-a", "POST", "/sites", json=site_body(site_id))).status_code == 201
    page = (await api.call("aud", "GET", f"/audit?site_id={site_id}&limit=1000")).json()
    assert [(r["actor_id"], r["action"], r["outcome"]) for r in page["records"]] == [
        ("inst-a", "site.create", "allowed")
    ]


async def test_operations_recorded_elsewhere_join_the_one_audit_chain(api: Api) -> None:
    site_id = await make_site(api)
    record = {"source": "opsroom", "action": "site.exclude", "site_id": site_id, "detail": "noisy meter"}
    assert (await api.call("op-a", "POST", "/audit/operations", json=record)).status_code == 201
    bad = {**record, "action": "Site Exclude; DROP"}
    assert (await api.call("op-a", "POST", "/audit/operations", json=bad)).status_code == 422
    page = (await api.call("aud", "GET", f"/audit?site_id={site_id}&actor_id=op-a")).json()
    assert [(r["action"], r["role"], r["detail"]) for r in page["records"]] == [
        ("opsroom:site.exclude", "operator", "noisy meter")
    ]
    assert (await api.call("aud", "GET", "/audit/verify")).json()["ok"] is True


async def test_operational_reads_and_writes_are_audited_with_purpose(api: Api) -> None:
    site_id = await make_site(api)
    assert (await api.call("op-a", "GET", f"/sites/{site_id}/status?purpose=balance")).status_code == 200
    assert (
        await api.call("op-a", "PUT", f"/sites/{site_id}/status?purpose=balance", json=STATUS)
    ).status_code == 200
    page = (await api.call("aud", "GET", f"/audit?site_id={site_id}&actor_id=op-a")).json()
    assert [(r["action"], r["purpose"], r["outcome"]) for r in page["records"]] == [
        ("operational.read", "balance", "allowed"),
        ("status.write", "balance", "allowed"),
    ]


async def test_operator_needs_consent_for_the_stated_purpose(api: Api) -> None:
    site_id = await make_site(api)
    assert (await api.call("op-a", "GET", f"/sites/{site_id}/settings?purpose=balance")).status_code == 200
    other = await api.call("op-a", "GET", f"/sites/{site_id}/settings?purpose=marketing")
    assert other.status_code == 403
    assert "marketing" in other.json()["detail"]
    assert (await api.call("op-a", "GET", f"/sites/{site_id}/settings")).status_code == 403


async def test_lists_never_leak_other_sites(api: Api) -> None:
    mine = await make_site(api, owner="owner-a", consent_for=("op-a",))
    theirs = await make_site(api, owner="owner-b", consent_for=())

    async def ids(who: str, query: str = "") -> set[str]:
        response = await api.call(who, "GET", f"/sites{query}")
        assert response.status_code == 200
        return {s["site_id"] for s in response.json()["sites"]}

    assert mine in await ids("op-a")
    assert theirs not in await ids("op-a")
    assert mine not in await ids("op-a", "?purpose=dispatch")
    assert not {mine, theirs} & await ids("op-b")
    assert mine in await ids("owner-a")
    assert theirs not in await ids("owner-a")
    assert theirs in await ids("owner-b")
    assert not {mine, theirs} & await ids("inst-b")
    exported = (await api.call("inst-b", "GET", "/sites/export")).json()["sites"]
    assert not {mine, theirs} & {s["site_id"] for s in exported}


async def test_revoked_consent_stops_access_at_once(api: Api) -> None:
    site_id = await make_site(api)
    path = f"/sites/{site_id}/settings?purpose=balance"
    assert (await api.call("op-a", "GET", path)).status_code == 200
    revoked = await api.call("owner-a", "DELETE", f"/sites/{site_id}/consents/op-a/balance")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (await api.call("op-a", "GET", path)).status_code == 403
    assert (await api.call("op-a", "GET", f"/sites/{site_id}")).status_code == 403
    listed = (await api.call("op-a", "GET", "/sites")).json()["sites"]
    assert site_id not in {s["site_id"] for s in listed}
    again = await api.call("owner-a", "DELETE", f"/sites/{site_id}/consents/op-a/balance")
    assert again.status_code == 404


async def test_consent_expires(api: Api) -> None:
    site_id = await make_site(api, consent_for=())
    expires = utc_now() + timedelta(seconds=1.5)
    grant = {"actor_id": "op-a", "purpose": "balance", "expires_at": expires.isoformat()}
    assert (await api.call("owner-a", "POST", f"/sites/{site_id}/consents", json=grant)).status_code == 201
    path = f"/sites/{site_id}/status?purpose=balance"
    assert (await api.call("op-a", "GET", path)).status_code == 200
    deadline = time.monotonic() + 10
    while (code := (await api.call("op-a", "GET", path)).status_code) == 200:
        assert time.monotonic() < deadline, "consent never expired"
        await asyncio.sleep(0.2)
    assert code == 403
    assert utc_now() >= expires


async def test_consent_expiry_must_be_in_the_future(api: Api) -> None:
    site_id = await make_site(api, consent_for=())
    grant = {"actor_id": "op-a", "purpose": "balance", "expires_at": "2020-01-01T00:00:00Z"}
    response = await api.call("owner-a", "POST", f"/sites/{site_id}/consents", json=grant)
    assert response.status_code == 422
    assert "future" in response.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hp_heat_power_kw": 0}, "hp_heat_power_kw"),
        ({"hp_electric_power_kw": -1}, "hp_electric_power_kw"),
        ({"lockout_minutes": -5}, "lockout_minutes"),
        ({"control_options": ["magic"]}, "sg_ready"),
        ({"control_options": []}, "control_options"),
        ({"hp_heat_power_kw": 1.0, "hp_electric_power_kw": 2.0}, "COP < 1"),
        ({"location": {"latitude_deg": 95, "longitude_deg": 8, "price_area": "DK1"}}, "latitude_deg"),
        ({"location": {"latitude_deg": 55, "longitude_deg": 8, "price_area": "XX"}}, "price_area"),
        ({"hp_heat_power_w": 5000}, "hp_heat_power_w"),
    ],
)
async def test_bad_master_data_is_rejected_with_a_clear_message(
    api: Api, change: dict[str, Any], message: str
) -> None:
    response = await api.call("inst-a", "POST", "/sites", json=site_body(unique("bad"), **change))
    assert response.status_code == 422
    assert message in response.text


async def test_installer_cannot_edit_another_installers_site(api: Api) -> None:
    site_id = await make_site(api)
    response = await api.call("inst-b", "PUT", f"/sites/{site_id}", json=site_body(site_id, make_model="X"))
    assert response.status_code == 403
    imported = await api.call("inst-b", "POST", "/sites/import", json=[site_body(site_id)])
    assert imported.json()["rejected"] == 1
    assert "another installer" in imported.json()["errors"][0]["errors"][0]


async def test_bulk_import_reports_each_bad_row(api: Api) -> None:
    rows = [site_body(unique("bulk")) for _ in range(300)]
    rows[10]["hp_heat_power_kw"] = -1
    rows[200]["control_options"] = ["telepathy"]
    rows.append(dict(rows[0]))
    response = await api.call("inst-a", "POST", "/sites/import", json={"sites": rows})
    report = response.json()
    assert response.status_code == 200
    assert report["accepted"] == 298
    assert [e["row"] for e in report["errors"]] == [11, 201, 301]
    assert "hp_heat_power_kw" in report["errors"][0]["errors"][0]
    assert "repeated" in report["errors"][2]["errors"][0]
    stored = await api.call("inst-a", "GET", f"/sites/{rows[0]['site_id']}")
    assert stored.json()["installer_id"] == "inst-a"


async def test_csv_export_round_trips_through_import(api: Api) -> None:
    site_id = await make_site(api)
    csv_text = (await api.call("inst-a", "GET", "/sites/export?format=csv")).text
    line = next(line for line in csv_text.splitlines() if line.startswith(site_id + ","))
    header = csv_text.splitlines()[0]
    body = f"{header}\n{line.replace('Acme Hybrid 5', 'Acme Hybrid 6')}\n{site_id}-2,x,,200,8,DK1,1,1,z\n"
    response = await api.call(
        "inst-a", "POST", "/sites/import", content=body, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200
    report = response.json()
    assert report["accepted"] == 1, report
    assert report["errors"][0]["row"] == 2
    site = (await api.call("inst-a", "GET", f"/sites/{site_id}")).json()
    assert site["make_model"] == "Acme Hybrid 6"
    assert site["control_options"] == ["sg_ready", "evu"]


async def test_wrong_secret_and_basic_client_credentials(api: Api) -> None:
    bad = await api.client.post(
        "/token", data={"grant_type": "password", "username": "op-a", "password": "nope"}
    )
    assert bad.status_code == 401
    good = await api.client.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("op-a", SECRET.format("op-a"))
    )
    assert good.status_code == 200
    assert good.json()["role"] == "operator"


async def test_audit_chain_detects_a_modified_entry(api: Api) -> None:
    await make_site(api)
    assert (await api.call("aud", "GET", "/audit/verify")).json()["ok"] is True
    redis = aioredis.from_url(api.redis_url)
    key = f"{api.prefix}:audit"
    try:
        original = await redis.lindex(key, 3)
        record = json.loads(original)
        record["actor_id"] = "someone-else"
        await redis.lset(key, 3, json.dumps(record))
        report = (await api.call("aud", "GET", "/audit/verify")).json()
        assert report == {"ok": False, "checked": 3, "first_bad_seq": 3, "problem": report["problem"]}
        assert "hash" in report["problem"]
    finally:
        await redis.lset(key, 3, original)
        await redis.aclose()
    assert (await api.call("aud", "GET", "/audit/verify")).json()["ok"] is True


async def test_changes_are_published_on_sites_registry_and_audit_log(api: Api, infra: Infra) -> None:
    site_id = await make_site(api)
    sites = await wait_for_records(
        infra.kafka_bootstrap, topics.SITES_REGISTRY.name, lambda r: r.key == site_id.encode(), timeout=30
    )
    assert json.loads(sites[0].value)["owner_id"] == "owner-a"
    audit = await wait_for_records(
        infra.kafka_bootstrap,
        topics.AUDIT_LOG.name,
        lambda r: json.loads(r.value).get("site_id") == site_id,
        count=2,
        timeout=30,
    )
    actions = [json.loads(r.value)["action"] for r in audit]
    assert actions[:2] == ["site.create", "consent.grant"]
    seqs = [json.loads(r.value)["seq"] for r in audit]
    assert seqs == sorted(seqs)


async def test_openapi_documents_the_import_body(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    body = doc["paths"]["/sites/import"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv"} <= set(body)
    assert "SiteMasterDataIn" in doc["components"]["schemas"]


async def test_a_change_whose_publish_was_lost_is_republished_from_the_outbox(api: Api, infra: Infra) -> None:
    site_id = await make_site(api)
    store = api.registry.store
    assert site_id not in {e.site_id for e in await store.outbox(10_000)}  # published and cleared
    # As if the process died after the Redis transaction and before the broker acknowledged:
    lost = SiteMasterDataIn.model_validate(site_body(site_id, make_model="Acme lost")).to_event(
        "inst-a", utc_now() - timedelta(minutes=1)
    )
    await store.put_sites([lost], [await store.site(site_id)])
    assert await flush_outbox(api.registry) >= 1
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.SITES_REGISTRY.name,
        lambda r: r.key == site_id.encode() and json.loads(r.value)["make_model"] == "Acme lost",
        timeout=30,
    )
    assert len(records) == 1
    assert site_id not in {e.site_id for e in await store.outbox(10_000)}


async def test_deleting_a_site_publishes_a_deletion_record(api: Api, infra: Infra) -> None:
    site_id = await make_site(api)
    assert (await api.call("inst-a", "DELETE", f"/sites/{site_id}")).status_code == 204
    assert (await api.call("inst-a", "GET", f"/sites/{site_id}")).status_code == 404
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.SITES_REGISTRY.name,
        lambda r: r.key == site_id.encode() and json.loads(r.value)["deleted"] is True,
        timeout=30,
    )
    assert json.loads(records[0].value)["installer_id"] == "inst-a"
