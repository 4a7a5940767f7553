"""The simulated fleet is registered through the registry's import API, not behind its back."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from hybridpool_shared import topics
from hybridpool_shared.messages import SiteMasterDataChanged
from tests.infra import Infra, poll_json, running, unique, wait_for_records

pytestmark = pytest.mark.integration


async def test_site_sim_registers_its_fleet_with_the_registry_and_its_owner_consents(infra: Infra) -> None:
    """The installer imports the homes, their owner lets the operator see the configured share of them."""
    secret = secrets.token_urlsafe(18)
    installer, owner, operator = unique("installer"), unique("owner"), unique("operator")
    principals = json.dumps(
        [
            {"id": installer, "role": "installer", "secret": secret},
            {"id": owner, "role": "user", "secret": secret},
            {"id": operator, "role": "operator", "secret": secret},
        ]
    )
    prefix = unique("regvilla")
    with running("registry", infra, {"REGISTRY_PRINCIPALS_JSON": principals}) as registry:
        env = {
            "SITE_SIM_SITES": "25",
            "SITE_SIM_SITE_PREFIX": prefix,
            "SITE_SIM_REGISTRY_URL": registry.url,
            "SITE_SIM_REGISTRY_CLIENT_ID": installer,
            "SITE_SIM_REGISTRY_CLIENT_SECRET": secret,
            "SITE_SIM_OWNER_ID": owner,
            "SITE_SIM_OWNER_SECRET": secret,
            "SITE_SIM_CONSENT_OPERATOR_ID": operator,
            "SITE_SIM_CONSENT_SHARE": "0.6",
        }
        with running("site_sim", infra, env):
            records = await wait_for_records(
                infra.kafka_bootstrap,
                topics.SITES_REGISTRY.name,
                lambda r: r.key is not None and r.key.decode().startswith(prefix),
                count=25,
            )
            async with httpx.AsyncClient(base_url=registry.url, timeout=10.0) as client:
                token = await client.post(
                    "/token", data={"grant_type": "password", "username": operator, "password": secret}
                )
                client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                visible = await poll_json(
                    client, f"{registry.url}/sites?purpose=operations", lambda body: len(body["sites"]) >= 15
                )
    sites = [SiteMasterDataChanged.from_json_bytes(r.value) for r in records]
    assert len({s.site_id for s in sites}) == 25
    assert {s.installer_id for s in sites} == {installer}  # the registry stamped who imported them
    assert {s.owner_id for s in sites} == {owner}
    assert all(1.0 <= s.hp_electric_power_kw <= 5.0 for s in sites if s.heated_area_m2 < 1000)
    assert sorted(v["site_id"] for v in visible["sites"]) == sorted(s.site_id for s in sites)[:15]
