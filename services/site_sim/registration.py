"""Register the simulated fleet through the registry's bulk import, as an installer would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import httpx

from hybridpool_shared.messages import SiteMasterDataChanged
from hybridpool_shared.messages.registry import SiteMasterData
from hybridpool_shared.settings import INFRA_FILE_ENV
from services.site_sim.settings import SiteSimSettings

LOGGER = logging.getLogger(__name__)
IMPORT_CHUNK = 5000
MAX_BACKOFF_S = 30.0


class RegistrationUnavailableError(RuntimeError):
    """No registry address or installer credentials are known yet."""


def import_rows(master: list[SiteMasterDataChanged]) -> list[dict[str, object]]:
    """Return the import rows of the fleet: master data only, the registry adds who and when."""
    fields = set(SiteMasterData.model_fields) - {"schema_version"}
    return [{k: v for k, v in site.model_dump(mode="json").items() if k in fields} for site in master]


def _infra_dir() -> Path | None:
    infra = os.environ.get(INFRA_FILE_ENV)
    return Path(infra).parent if infra else None


def registry_url(settings: SiteSimSettings) -> str:
    """Return the registry's base URL: the setting, else the one `hybridpool up` recorded."""
    if settings.registry_url:
        return settings.registry_url.rstrip("/")
    folder = _infra_dir()
    state_file = folder / "infra.json" if folder else None
    if state_file is None or not state_file.is_file():
        raise RegistrationUnavailableError("no SITE_SIM_REGISTRY_URL and no running platform recorded")
    for svc in json.loads(state_file.read_text()).get("services", []):
        if svc.get("name") == "registry":
            return f"http://127.0.0.1:{svc['port']}"
    raise RegistrationUnavailableError("the running platform has no registry service")


def installer_secret(settings: SiteSimSettings) -> str:
    """Return the installer's secret: the setting, else the registry's local-dev principals file."""
    if settings.registry_client_secret is not None:
        return settings.registry_client_secret.get_secret_value()
    folder = _infra_dir()
    dev_file = folder / "registry" / "principals.json" if folder else None
    if dev_file is None or not dev_file.is_file():
        raise RegistrationUnavailableError("no SITE_SIM_REGISTRY_CLIENT_SECRET and no dev principals yet")
    for spec in json.loads(dev_file.read_text()):
        if spec.get("id") == settings.registry_client_id:
            return str(spec["secret"])
    raise RegistrationUnavailableError(f"{settings.registry_client_id} is not in {dev_file}")


async def register_fleet(
    client: httpx.AsyncClient, base_url: str, client_id: str, secret: str, master: list[SiteMasterDataChanged]
) -> int:
    """Import the fleet in chunks; return how many sites the registry accepted."""
    token = await client.post(
        f"{base_url}/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    rows = import_rows(master)
    accepted = 0
    for start in range(0, len(rows), IMPORT_CHUNK):
        reply = await client.post(
            f"{base_url}/sites/import", json=rows[start : start + IMPORT_CHUNK], headers=headers
        )
        reply.raise_for_status()
        report = reply.json()
        if report.get("errors"):
            LOGGER.error("registry refused %s fleet rows: %s", len(report["errors"]), report["errors"][:3])
        accepted += len(rows[start : start + IMPORT_CHUNK]) - len(report.get("errors", []))
    return accepted


async def keep_trying_to_register(settings: SiteSimSettings, master: list[SiteMasterDataChanged]) -> None:
    """Register the fleet once the registry answers; give up quietly if the run has no registry."""
    backoff = 0.5
    async with httpx.AsyncClient(timeout=60.0) as client:
        while True:
            try:
                url = registry_url(settings)
                secret = installer_secret(settings)
                accepted = await register_fleet(client, url, settings.registry_client_id, secret, master)
                LOGGER.info("registered %s of %s simulated sites with the registry", accepted, len(master))
                return
            except RegistrationUnavailableError as exc:
                if settings.registry_url is None and _infra_dir() is None:
                    LOGGER.info("fleet not registered: %s", exc)
                    return
                LOGGER.info("waiting to register the fleet: %s", exc)
            except httpx.HTTPError as exc:
                LOGGER.warning("fleet registration failed, retrying: %r", exc)
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
