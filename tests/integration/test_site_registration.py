"""The simulated fleet is registered through the registry's import API, not behind its back."""

from __future__ import annotations

import json
import secrets

import pytest

from hybridpool_shared import topics
from hybridpool_shared.messages import SiteMasterDataChanged
from tests.infra import Infra, running, unique, wait_for_records

pytestmark = pytest.mark.integration


async def test_site_sim_registers_its_fleet_with_the_registry(infra: Infra) -> None:
    secret = secrets.token_urlsafe(18)
    installer = unique("installer")
    principals = json.dumps([{"id": installer, "role": "installer", "secret": secret}])
    prefix = unique("regvilla")
    with running("registry", infra, {"REGISTRY_PRINCIPALS_JSON": principals}) as registry:
        env = {
            "SITE_SIM_SITES": "25",
            "SITE_SIM_SITE_PREFIX": prefix,
            "SITE_SIM_REGISTRY_URL": registry.url,
            "SITE_SIM_REGISTRY_CLIENT_ID": installer,
            "SITE_SIM_REGISTRY_CLIENT_SECRET": secret,
        }
        with running("site_sim", infra, env):
            records = await wait_for_records(
                infra.kafka_bootstrap,
                topics.SITES_REGISTRY.name,
                lambda r: r.key is not None and r.key.decode().startswith(prefix),
                count=25,
            )
    sites = [SiteMasterDataChanged.from_json_bytes(r.value) for r in records]
    assert len({s.site_id for s in sites}) == 25
    assert {s.installer_id for s in sites} == {installer}  # the registry stamped who imported them
    assert all(1.0 <= s.hp_electric_power_kw <= 5.0 for s in sites if s.heated_area_m2 < 1000)
