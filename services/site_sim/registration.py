"""Register the simulated fleet through the registry's bulk import, as an installer would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

from hybridpool_shared.messages import SiteMasterDataChanged
from hybridpool_shared.messages.registry import SiteMasterData
from hybridpool_shared.settings import INFRA_FILE_ENV
from hybridpool_shared.timeutil import utc_now
from services.site_sim.settings import SiteSimSettings

LOGGER = logging.getLogger(__name__)
IMPORT_CHUNK = 5000
CONSENT_CONCURRENCY = 50
MAX_BACKOFF_S = 30.0


class RegistrationUnavailableError(RuntimeError):
    """No registry address or installer credentials are known yet."""


def import_rows(master: list[SiteMasterDataChanged], owner_id: str = "") -> list[dict[str, object]]:
    """Return the import rows of the fleet: master data and owner, the registry adds who and when."""
    fields = set(SiteMasterData.model_fields) - {"schema_version"}
    rows = [{k: v for k, v in site.model_dump(mode="json").items() if k in fields} for site in master]
    if owner_id:
        for row in rows:
            row["owner_id"] = owner_id
    return rows


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


def principal_secret(principal_id: str, configured: SecretStr | None, setting: str) -> str:
    """Return a principal's secret: the setting, else the registry's local-dev principals file."""
    if configured is not None:
        return configured.get_secret_value()
    folder = _infra_dir()
    dev_file = folder / "registry" / "principals.json" if folder else None
    if dev_file is None or not dev_file.is_file():
        raise RegistrationUnavailableError(f"no {setting} and no dev principals yet")
    for spec in json.loads(dev_file.read_text()):
        if spec.get("id") == principal_id:
            return str(spec["secret"])
    raise RegistrationUnavailableError(f"{principal_id} is not in {dev_file}")


async def _bearer(client: httpx.AsyncClient, base_url: str, principal_id: str, secret: str) -> dict[str, str]:
    token = await client.post(
        f"{base_url}/token",
        data={"grant_type": "client_credentials", "client_id": principal_id, "client_secret": secret},
    )
    token.raise_for_status()
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def register_fleet(
    client: httpx.AsyncClient,
    base_url: str,
    client_id: str,
    secret: str,
    master: list[SiteMasterDataChanged],
    owner_id: str = "",
) -> int:
    """Import the fleet in chunks; return how many sites the registry accepted."""
    headers = await _bearer(client, base_url, client_id, secret)
    rows = import_rows(master, owner_id)
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


def consenting_sites(site_ids: list[str], share: float) -> list[str]:
    """The homes whose owner consents: the first share of the fleet, the same at every start."""
    return site_ids[: round(len(site_ids) * share)]


async def grant_consents(
    client: httpx.AsyncClient, base_url: str, settings: SiteSimSettings, site_ids: list[str]
) -> int:
    """As the homes' owner, let the configured operator use their data; return how many were granted."""
    secret = principal_secret(settings.owner_id, settings.owner_secret, "SITE_SIM_OWNER_SECRET")
    headers = await _bearer(client, base_url, settings.owner_id, secret)
    grant = {
        "actor_id": settings.consent_operator_id,
        "purpose": settings.consent_purpose,
        "expires_at": (utc_now() + timedelta(days=settings.consent_days)).isoformat(),
    }
    chosen = consenting_sites(site_ids, settings.consent_share)
    for start in range(0, len(chosen), CONSENT_CONCURRENCY):
        replies = await asyncio.gather(
            *(
                client.post(f"{base_url}/sites/{site_id}/consents", json=grant, headers=headers)
                for site_id in chosen[start : start + CONSENT_CONCURRENCY]
            )
        )
        for reply in replies:
            reply.raise_for_status()
    return len(chosen)


async def _consent_once(
    client: httpx.AsyncClient, base_url: str, settings: SiteSimSettings, site_ids: list[str]
) -> None:
    """Grant the owner's consents; a missing or refused owner is a setting to fix, so it is said once."""
    if not (settings.owner_id and settings.consent_operator_id):
        return
    try:
        granted = await grant_consents(client, base_url, settings, site_ids)
    except RegistrationUnavailableError as exc:
        LOGGER.warning("the homes' consents were not granted: %s", exc)
        return
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code >= 500:
            raise
        LOGGER.warning("the registry refused the homes' consents: %s", exc.response.text[:300])
        return
    LOGGER.info("owner %s let %s see %s homes", settings.owner_id, settings.consent_operator_id, granted)


async def keep_trying_to_register(settings: SiteSimSettings, master: list[SiteMasterDataChanged]) -> None:
    """Register the fleet once the registry answers, then the owner's consents; give up quietly if the
    run has no registry."""
    backoff = 0.5
    registered = False
    async with httpx.AsyncClient(timeout=60.0) as client:
        while True:
            try:
                url = registry_url(settings)
                if not registered:
                    secret = principal_secret(
                        settings.registry_client_id,
                        settings.registry_client_secret,
                        "SITE_SIM_REGISTRY_CLIENT_SECRET",
                    )
                    accepted = await register_fleet(
                        client, url, settings.registry_client_id, secret, master, settings.owner_id
                    )
                    LOGGER.info(
                        "registered %s of %s simulated sites with the registry", accepted, len(master)
                    )
                    registered = True
                await _consent_once(client, url, settings, [m.site_id for m in master])
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
