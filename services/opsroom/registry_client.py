"""The registry's HTTP API as the ops room uses it: operator login and the sites an operator may see."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hybridpool_shared.settings import DEFAULT_INFRA_FILE, INFRA_FILE_ENV


class RegistryUnavailableError(RuntimeError):
    """The registry could not be reached or answered unexpectedly."""


class LoginRefusedError(RuntimeError):
    """Wrong credentials, or a principal that is not an operator."""


class TokenExpiredError(RuntimeError):
    """The registry no longer accepts the session's token."""


@dataclass(frozen=True)
class Login:
    """A successful login at the registry."""

    principal_id: str
    role: str
    token: str
    expires_in_s: int


def service_base_url(name: str, configured: str | None) -> str:
    """Return a service's URL: the setting, else the port `hybridpool up` recorded in its infra file."""
    if configured:
        return configured.rstrip("/")
    path = Path(os.environ.get(INFRA_FILE_ENV, str(DEFAULT_INFRA_FILE)))
    setting = f"OPSROOM_{name.upper()}_URL"
    try:
        services = json.loads(path.read_text()).get("services", [])
    except (OSError, ValueError) as exc:
        raise RegistryUnavailableError(f"{setting} is unset and {path} is unreadable") from exc
    for svc in services:
        if svc.get("name") == name:
            return f"http://127.0.0.1:{svc['port']}"
    raise RegistryUnavailableError(f"{setting} is unset and {path} names no {name}")


def registry_base_url(configured: str | None) -> str:
    """Return the registry's URL (setting, else `hybridpool up`'s infra file)."""
    return service_base_url("registry", configured)


class BiddingClient:
    """Reads the bidding service's summary of its latest plan (status, fallback, reason, sources)."""

    def __init__(self, configured_url: str | None, http: httpx.AsyncClient) -> None:
        self.configured_url = configured_url
        self.http = http

    async def latest_plan(self) -> dict[str, Any]:
        """Return bidding's latest day-ahead plan summary, or why it is not available."""
        try:
            url = service_base_url("bidding", self.configured_url) + "/plan/latest"
            response = await self.http.get(url)
        except (RegistryUnavailableError, httpx.HTTPError) as exc:
            return {"available": False, "why": str(exc)}
        if response.status_code != 200:
            return {
                "available": False,
                "why": f"bidding answered {response.status_code}: {response.text[:200]}",
            }
        return {"available": True, **response.json()}


class RegistryClient:
    """Calls the registry with the operator's own bearer token, so its consent rules apply."""

    def __init__(self, configured_url: str | None, cache_s: float, timeout_s: float = 10.0) -> None:
        self.configured_url = configured_url
        self.cache_s = cache_s
        self.http = httpx.AsyncClient(timeout=timeout_s)
        self._visible: dict[tuple[str, str], tuple[float, dict[str, dict[str, Any]]]] = {}

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        url = registry_base_url(self.configured_url) + path
        try:
            return await self.http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(f"registry at {url}: {exc}") from exc

    async def login(self, username: str, password: str) -> Login:
        """Exchange an operator's username and password for a registry token (password grant)."""
        form = {"grant_type": "password", "username": username, "password": password}
        response = await self._call("POST", "/token", data=form)
        if response.status_code in (400, 401):
            raise LoginRefusedError("unknown user or wrong password")
        if response.status_code != 200:
            raise RegistryUnavailableError(f"registry /token answered {response.status_code}")
        body = response.json()
        if body.get("role") != "operator":
            raise LoginRefusedError(f"{username} is a {body.get('role')}, not an operator")
        return Login(username, "operator", str(body["access_token"]), int(body["expires_in"]))

    async def visible_sites(self, token: str, purpose: str) -> dict[str, dict[str, Any]]:
        """Return the sites whose owners consented to this operator for the purpose (cached briefly)."""
        key = (token, purpose)
        hit = self._visible.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        response = await self._call(
            "GET", "/sites", params={"purpose": purpose}, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == 401:
            raise TokenExpiredError("registry token expired")
        if response.status_code != 200:
            raise RegistryUnavailableError(f"registry /sites answered {response.status_code}")
        sites = {s["site_id"]: s for s in response.json()["sites"]}
        if len(self._visible) > 1000:
            self._visible.clear()
        self._visible[key] = (time.monotonic(), sites)
        return sites

    async def site_status(self, token: str, site_id: str, purpose: str) -> dict[str, Any] | None:
        """Read a site's HP-Hub status through the registry, which checks consent and audits the read."""
        response = await self._call(
            "GET",
            f"/sites/{site_id}/status",
            params={"purpose": purpose},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code == 401:
            raise TokenExpiredError("registry token expired")
        if response.status_code in (403, 404):
            return None
        if response.status_code != 200:
            raise RegistryUnavailableError(f"registry status answered {response.status_code}")
        body = response.json()
        return None if body is None else dict(body)

    async def record_operation(
        self, token: str, action: str, outcome: str, site_id: str | None, detail: str
    ) -> None:
        """Append the operator's action to the registry's audit chain (the one auditors read)."""
        body = {
            "source": "opsroom",
            "action": action,
            "outcome": outcome,
            "site_id": site_id,
            "detail": detail,
        }
        response = await self._call(
            "POST", "/audit/operations", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == 401:
            raise TokenExpiredError("registry token expired")
        if response.status_code != 201:
            raise RegistryUnavailableError(
                f"registry /audit/operations answered {response.status_code}: {response.text[:200]}"
            )

    def forget(self, token: str) -> None:
        """Drop cached lookups of a token (after an action the operator expects to see at once)."""
        for key in [k for k in self._visible if k[0] == token]:
            del self._visible[key]


class DispatchClient:
    """Reads dispatch's report of an activation: response curve from the sites it dispatched, verdict."""

    def __init__(self, configured_url: str | None, http: httpx.AsyncClient) -> None:
        self.configured_url = configured_url
        self.http = http

    async def report(self, activation_id: str) -> dict[str, Any] | None:
        """Return dispatch's report, or None when dispatch is not reachable or does not know it."""
        try:
            url = service_base_url("dispatch", self.configured_url) + f"/activations/{activation_id}/report"
            response = await self.http.get(url, timeout=2.0)
        except (RegistryUnavailableError, httpx.HTTPError):
            return None
        return dict(response.json()) if response.status_code == 200 else None
