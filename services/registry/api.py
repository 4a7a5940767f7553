"""HTTP API of the registry: tokens, sites, operational data, consent, audit, bulk import/export."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from hybridpool_shared.messages.base import SiteId
from hybridpool_shared.messages.registry import AuditRecorded, SiteMasterDataChanged
from hybridpool_shared.timeutil import utc_now
from services.registry import bulk
from services.registry.adapters import RegistryStore
from services.registry.domain import (
    Action,
    AuditEntry,
    Consent,
    ConsentGrant,
    OperationRecordIn,
    Principal,
    Purpose,
    Role,
    SiteMasterDataIn,
    SiteSettings,
    SiteStatus,
    role_allows,
    site_access,
    verify_chain,
)

LOGGER = logging.getLogger(__name__)
Publish = Callable[[SiteMasterDataChanged], Awaitable[None]]
BEARER = HTTPBearer(auto_error=False, description="A token from POST /token.")
AUDIT_SCAN_LIMIT = 10_000


class TokenResponse(BaseModel):
    """An OAuth2 bearer token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: Role


class SiteList(BaseModel):
    """The sites a caller may see, nothing else."""

    sites: list[SiteMasterDataChanged]


class AuditPage(BaseModel):
    """A page of audit records and where the next page starts."""

    records: list[AuditRecorded]
    next_seq: int
    total: int


class ChainVerification(BaseModel):
    """Whether the audit chain is intact."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""


TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials", "password"]},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": {"type": "object"}},
        },
        "description": "OAuth2 client credentials (systems) or password grant (people, local setup); "
        "client credentials may also come as HTTP Basic.",
    }
}
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": {"$ref": "#/components/schemas/SiteMasterDataIn"}},
                        {
                            "type": "object",
                            "properties": {
                                "sites": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/SiteMasterDataIn"},
                                }
                            },
                        },
                    ]
                }
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(bulk.CSV_COLUMNS)
                + "\nvilla-1,Acme 5,Skolevej 1,56.1,10.2,DK1,5,1.6,3,33,0.95,15,15,3,180,0,"
                + "sg_ready|evu,M1,,150,owner-1",
            },
        },
        "description": "Up to REGISTRY_IMPORT_MAX_ROWS sites; rows are upserts of the caller's own sites. "
        f"CSV columns: {', '.join(bulk.CSV_COLUMNS)}; control_options separated by '|'.",
    }
}


class Registry:
    """The registry's use cases behind the HTTP routes: access checks, storage, audit, publishing."""

    def __init__(self, store: RegistryStore, publish: Publish, token_ttl_s: int, concurrency: int) -> None:
        self.store = store
        self.publish = publish
        self.token_ttl_s = token_ttl_s
        self.concurrency = concurrency
        self.audit_added = asyncio.Event()

    async def audit(self, entries: list[AuditEntry]) -> None:
        """Append to the audit chain and wake the publisher.

        An allowed change is audited before it is made: a failed append stops the change, so no change
        is ever without its record (a change that then fails leaves the record of an allowed request).
        """
        if entries:
            await self.store.append_audit(entries, utc_now())
            self.audit_added.set()

    async def deny(
        self, who: Principal, action: Action, reason: str, site_id: str | None = None
    ) -> HTTPException:
        """Record a refused request and return the 403 to raise."""
        await self.audit([AuditEntry(who.id, who.role, action, "denied", site_id, "", reason)])
        return HTTPException(status.HTTP_403_FORBIDDEN, detail=reason)

    async def require_role(self, who: Principal, action: Action) -> None:
        """Raise 403 (audited) unless the role may do the action at all."""
        decision = role_allows(who, action)
        if not decision.allowed:
            raise await self.deny(who, action, decision.reason)

    async def require_site(
        self, who: Principal, action: Action, site_id: str, purpose: str | None = None
    ) -> SiteMasterDataChanged | None:
        """Return the site if the caller may do action on it; raise an audited 403 otherwise."""
        await self.require_role(who, action)
        site = await self.store.site(site_id)
        consents = await self.store.consents(site_id) if who.role is Role.OPERATOR else []
        decision = site_access(who, action, site, consents, purpose, utc_now())
        if not decision.allowed:
            raise await self.deny(who, action, decision.reason, site_id)
        return site

    async def publish_all(self, events: list[SiteMasterDataChanged]) -> None:
        """Publish site events concurrently (each keyed by its site, so per-site order holds)."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(event: SiteMasterDataChanged) -> None:
            async with gate:
                await self.publish(event)

        await asyncio.gather(*(one(e) for e in events))
        await self.store.published(events)

    async def visible_sites(self, who: Principal, purpose: str | None) -> list[SiteMasterDataChanged]:
        """Return exactly the sites this caller may read."""
        kind = {Role.INSTALLER: "installer_sites", Role.USER: "owner_sites", Role.OPERATOR: "actor_sites"}[
            who.role
        ]
        ids = await self.store.site_ids_of(kind, who.id)
        sites = [s for s in await self.store.sites(ids) if s is not None]
        if who.role is not Role.OPERATOR:
            return sites
        now = utc_now()
        visible = []
        for site in sites:
            consents = await self.store.consents(site.site_id)
            if any(c.actor_id == who.id and c.active(now) and purpose in (None, c.purpose) for c in consents):
                visible.append(site)
        return visible


async def current(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    """Return the principal of the request's bearer token or answer 401."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    registry: Registry = request.app.state.registry
    who = await registry.store.token_principal(creds.credentials)
    if who is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    return who


Caller = Annotated[Principal, Depends(current)]
PurposeQuery = Annotated[Purpose | None, Query(description="Why operational data is used (operators).")]


def build_router(registry: Registry) -> APIRouter:
    """Return every registry route."""
    router = APIRouter()

    _token_route(router, registry)
    _bulk_routes(router, registry)  # before /sites/{site_id}: "export" is a valid site id
    _site_routes(router, registry)
    _operational_routes(router, registry)
    _consent_routes(router, registry)
    _audit_routes(router, registry)
    return router


def _token_route(router: APIRouter, registry: Registry) -> None:
    @router.post("/token", tags=["auth"], response_model=TokenResponse, openapi_extra=TOKEN_BODY)
    async def token(request: Request) -> TokenResponse:
        """Exchange client credentials or a password for a bearer token."""
        form = await _token_form(request)
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "password"):
            raise HTTPException(400, "grant_type must be client_credentials or password")
        ident = form.get("client_id") if grant == "client_credentials" else form.get("username")
        secret = form.get("client_secret") if grant == "client_credentials" else form.get("password")
        stored = await registry.store.principal(ident) if ident else None
        if stored is None or not secret or not stored.check(secret):
            await registry.audit([AuditEntry(ident or "anonymous", "unknown", Action.LOGIN, "denied")])
            raise HTTPException(
                401, "unknown principal or wrong secret", headers={"WWW-Authenticate": "Bearer"}
            )
        who = Principal(stored.id, stored.role)
        issued = await registry.store.issue_token(who, registry.token_ttl_s)
        await registry.audit([AuditEntry(who.id, who.role, Action.LOGIN, "allowed", detail=grant)])
        return TokenResponse(access_token=issued, expires_in=registry.token_ttl_s, role=who.role)


async def _token_form(request: Request) -> dict[str, str]:
    body = await request.body()
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        try:
            raw = json.loads(body or b"{}")
        except ValueError as exc:
            raise HTTPException(400, "body is not JSON") from exc
        form = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    else:
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise HTTPException(400, "malformed Basic credentials") from exc
        form.setdefault("client_id", client_id)
        form.setdefault("client_secret", client_secret)
    return form


def _site_routes(router: APIRouter, registry: Registry) -> None:
    @router.get("/sites", tags=["sites"], response_model=SiteList)
    async def list_sites(who: Caller, purpose: PurposeQuery = None) -> SiteList:
        """List the master data of the sites the caller may see (never others)."""
        await registry.require_role(who, Action.SITE_READ)
        return SiteList(sites=await registry.visible_sites(who, purpose))

    @router.post("/sites", tags=["sites"], status_code=201, response_model=SiteMasterDataChanged)
    async def create_site(body: SiteMasterDataIn, who: Caller) -> SiteMasterDataChanged:
        """Register a new site (installers); published on sites.registry."""
        await registry.require_role(who, Action.SITE_CREATE)
        if await registry.store.site(body.site_id) is not None:
            raise await registry.deny(who, Action.SITE_CREATE, "site already exists", body.site_id)
        return await _store_site(registry, who, body, None, Action.SITE_CREATE)

    @router.get("/sites/{site_id}", tags=["sites"], response_model=SiteMasterDataChanged)
    async def read_site(site_id: SiteId, who: Caller) -> SiteMasterDataChanged:
        """Return one site's master data."""
        site = await registry.require_site(who, Action.SITE_READ, site_id)
        if site is None:
            raise HTTPException(404, f"no site {site_id}")
        return site

    @router.put("/sites/{site_id}", tags=["sites"], response_model=SiteMasterDataChanged)
    async def update_site(site_id: SiteId, body: SiteMasterDataIn, who: Caller) -> SiteMasterDataChanged:
        """Change a site's master data (the installer who installed it)."""
        if body.site_id != site_id:
            raise HTTPException(422, f"body site_id {body.site_id!r} differs from the path's {site_id!r}")
        old = await registry.require_site(who, Action.SITE_UPDATE, site_id)
        if old is None:
            raise HTTPException(404, f"no site {site_id}; create it with POST /sites")
        return await _store_site(registry, who, body, old, Action.SITE_UPDATE)

    @router.delete("/sites/{site_id}", tags=["sites"], status_code=204)
    async def delete_site(site_id: SiteId, who: Caller) -> Response:
        """Remove a site; a deletion record goes to sites.registry."""
        site = await registry.require_site(who, Action.SITE_DELETE, site_id)
        if site is None:
            raise HTTPException(404, f"no site {site_id}")
        deletion = site.model_copy(update={"deleted": True, "changed_at": utc_now()})
        await registry.audit([AuditEntry(who.id, who.role, Action.SITE_DELETE, "allowed", site_id)])
        await registry.store.delete_site(site, deletion)
        await registry.publish_all([deletion])
        return Response(status_code=204)


async def _store_site(
    registry: Registry,
    who: Principal,
    body: SiteMasterDataIn,
    old: SiteMasterDataChanged | None,
    action: Action,
) -> SiteMasterDataChanged:
    event = body.to_event(who.id, utc_now())
    await registry.audit([AuditEntry(who.id, who.role, action, "allowed", event.site_id)])
    await registry.store.put_sites([event], [old])
    await registry.publish_all([event])
    return event


def _operational_routes(router: APIRouter, registry: Registry) -> None:
    async def read_allowed(who: Principal, site_id: str, purpose: str | None, what: str) -> None:
        site = await registry.require_site(who, Action.OPS_READ, site_id, purpose)
        if site is None:
            raise HTTPException(404, f"no site {site_id}")
        await registry.audit(
            [AuditEntry(who.id, who.role, Action.OPS_READ, "allowed", site_id, purpose or "", what)]
        )

    async def write_allowed(who: Principal, action: Action, site_id: str, purpose: str | None) -> None:
        site = await registry.require_site(who, action, site_id, purpose)
        if site is None:
            raise HTTPException(404, f"no site {site_id}")

    @router.get("/sites/{site_id}/settings", tags=["operational"], response_model=SiteSettings)
    async def read_settings(site_id: SiteId, who: Caller, purpose: PurposeQuery = None) -> SiteSettings:
        """Read a site's settings (HP-Hub 201–204): owner, or an operator with consent for the purpose."""
        await read_allowed(who, site_id, purpose, "settings")
        return await registry.store.settings(site_id)

    @router.put("/sites/{site_id}/settings", tags=["operational"], response_model=SiteSettings)
    async def write_settings(
        site_id: SiteId, body: SiteSettings, who: Caller, purpose: PurposeQuery = None
    ) -> SiteSettings:
        """Change a site's settings: owner, or an operator with consent for the purpose."""
        await write_allowed(who, Action.SETTINGS_WRITE, site_id, purpose)
        await registry.store.put_settings(site_id, body)
        entry = AuditEntry(who.id, who.role, Action.SETTINGS_WRITE, "allowed", site_id, purpose or "")
        await registry.audit([entry])
        return body

    @router.get("/sites/{site_id}/status", tags=["operational"], response_model=SiteStatus | None)
    async def read_status(site_id: SiteId, who: Caller, purpose: PurposeQuery = None) -> SiteStatus | None:
        """Read a site's last status (HP-Hub 301–305); null until reported."""
        await read_allowed(who, site_id, purpose, "status")
        return await registry.store.status(site_id)

    @router.put("/sites/{site_id}/status", tags=["operational"], response_model=SiteStatus)
    async def write_status(
        site_id: SiteId, body: SiteStatus, who: Caller, purpose: PurposeQuery = None
    ) -> SiteStatus:
        """Report a site's status: an operator with consent for the purpose."""
        await write_allowed(who, Action.STATUS_WRITE, site_id, purpose)
        await registry.store.put_status(site_id, body)
        entry = AuditEntry(who.id, who.role, Action.STATUS_WRITE, "allowed", site_id, purpose or "")
        await registry.audit([entry])
        return body


def _consent_routes(router: APIRouter, registry: Registry) -> None:
    @router.get("/sites/{site_id}/consents", tags=["consent"], response_model=list[Consent])
    async def list_consents(site_id: SiteId, who: Caller) -> list[Consent]:
        """List the consents the owner gave for a site, with expiry and revocation."""
        await _owned(registry, who, Action.CONSENT_READ, site_id)
        return await registry.store.consents(site_id)

    @router.post("/sites/{site_id}/consents", tags=["consent"], status_code=201, response_model=Consent)
    async def grant(site_id: SiteId, body: ConsentGrant, who: Caller) -> Consent:
        """Let an actor use this site's operational data for one purpose until expires_at (owner)."""
        await _owned(registry, who, Action.CONSENT_GRANT, site_id)
        now = utc_now()
        if body.expires_at <= now:
            raise HTTPException(422, "expires_at must be in the future")
        consent = Consent(
            site_id=site_id,
            actor_id=body.actor_id,
            purpose=body.purpose,
            granted_at=now,
            expires_at=body.expires_at,
        )
        detail = f"actor={body.actor_id} expires_at={body.expires_at.isoformat()}"
        await registry.audit(
            [AuditEntry(who.id, who.role, Action.CONSENT_GRANT, "allowed", site_id, body.purpose, detail)]
        )
        await registry.store.put_consent(consent)
        return consent

    @router.delete("/sites/{site_id}/consents/{actor_id}/{purpose}", tags=["consent"], response_model=Consent)
    async def revoke(site_id: SiteId, actor_id: str, purpose: Purpose, who: Caller) -> Consent:
        """Withdraw a consent at once (owner); the actor loses access immediately."""
        await _owned(registry, who, Action.CONSENT_REVOKE, site_id)
        match = [
            c
            for c in await registry.store.consents(site_id)
            if (c.actor_id, c.purpose) == (actor_id, purpose)
        ]
        if not match or match[0].revoked_at is not None:
            raise HTTPException(404, f"no active consent for {actor_id} / {purpose}")
        revoked = match[0].model_copy(update={"revoked_at": utc_now()})
        entry = AuditEntry(
            who.id, who.role, Action.CONSENT_REVOKE, "allowed", site_id, purpose, f"actor={actor_id}"
        )
        await registry.audit([entry])
        await registry.store.put_consent(revoked)
        return revoked


async def _owned(registry: Registry, who: Principal, action: Action, site_id: str) -> None:
    if await registry.require_site(who, action, site_id) is None:
        raise HTTPException(404, f"no site {site_id}")


def _audit_routes(router: APIRouter, registry: Registry) -> None:
    @router.get("/audit", tags=["audit"], response_model=AuditPage)
    async def read_audit(
        who: Caller,
        start_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        site_id: SiteId | None = None,
        actor_id: str | None = None,
    ) -> AuditPage:
        """Read the audit trail from start_seq, optionally for one site or actor (auditors)."""
        await registry.require_role(who, Action.AUDIT_READ)
        raws = await registry.store.audit_range(start_seq, start_seq + AUDIT_SCAN_LIMIT - 1)
        records: list[AuditRecorded] = []
        next_seq = start_seq + len(raws)
        for offset, raw in enumerate(raws):
            record = AuditRecorded.from_json_bytes(raw)
            if (site_id is None or record.site_id == site_id) and (
                actor_id is None or record.actor_id == actor_id
            ):
                records.append(record)
                if len(records) == limit:
                    next_seq = start_seq + offset + 1
                    break
        total = await registry.store.audit_length()
        await registry.audit([AuditEntry(who.id, who.role, Action.AUDIT_READ, "allowed", site_id)])
        return AuditPage(records=records, next_seq=next_seq, total=total)

    @router.post("/audit/operations", tags=["audit"], status_code=201)
    async def record_operation(body: OperationRecordIn, who: Caller) -> dict[str, str]:
        """Append an operator's action in another system (e.g. the ops room) to the one audit chain."""
        await registry.require_role(who, Action.OPERATION_RECORD)
        action = f"{body.source}:{body.action}"
        await registry.audit(
            [AuditEntry(who.id, who.role, action, body.outcome, body.site_id, "", body.detail)]
        )
        return {"recorded": action}

    @router.get("/audit/verify", tags=["audit"], response_model=ChainVerification)
    async def verify(who: Caller) -> ChainVerification:
        """Recompute the whole hash chain and report the first record that was altered."""
        await registry.require_role(who, Action.AUDIT_READ)
        report = verify_chain(await registry.store.audit_range(0, -1))
        return ChainVerification(
            ok=report.ok, checked=report.checked, first_bad_seq=report.first_bad_seq, problem=report.problem
        )


def _bulk_routes(router: APIRouter, registry: Registry) -> None:
    @router.post("/sites/import", tags=["sites"], response_model=bulk.ImportReport, openapi_extra=IMPORT_BODY)
    async def import_sites(request: Request, who: Caller) -> bulk.ImportReport:
        """Create or update many of the caller's sites from JSON or CSV, with a per-row error report."""
        await registry.require_role(who, Action.SITE_IMPORT)
        try:
            rows = bulk.parse_rows(await request.body(), request.headers.get("content-type", ""))
        except bulk.BadImportError as exc:
            raise HTTPException(422, str(exc)) from exc
        if len(rows) > registry_max_rows(request):
            raise HTTPException(413, f"{len(rows)} rows; at most {registry_max_rows(request)} per request")
        return await _import(registry, who, rows)

    @router.get("/sites/export", tags=["sites"], response_model=SiteList)
    async def export_sites(
        who: Caller, fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json"
    ) -> Response | SiteList:
        """Export the caller's own sites as JSON or as CSV that import accepts."""
        await registry.require_role(who, Action.SITE_EXPORT)
        sites = await registry.visible_sites(who, None)
        await registry.audit(
            [AuditEntry(who.id, who.role, Action.SITE_EXPORT, "allowed", detail=f"{len(sites)} sites")]
        )
        if fmt == "csv":
            return Response(bulk.to_csv(sites), media_type="text/csv")
        return SiteList(sites=sites)


def registry_max_rows(request: Request) -> int:
    """Return the configured import row limit."""
    limit: int = request.app.state.import_max_rows
    return limit


async def _import(registry: Registry, who: Principal, rows: list[dict[str, Any]]) -> bulk.ImportReport:
    good, errors = bulk.validate_rows(rows)
    previous = await registry.store.sites([site.site_id for _, site in good])
    now = utc_now()
    events: list[SiteMasterDataChanged] = []
    olds: list[SiteMasterDataChanged | None] = []
    for (number, site), old in zip(good, previous, strict=True):
        if old is not None and old.installer_id != who.id:
            errors.append(
                bulk.RowError(row=number, site_id=site.site_id, errors=["installed by another installer"])
            )
            continue
        events.append(site.to_event(who.id, now))
        olds.append(old)
    if events:
        entries = [AuditEntry(who.id, who.role, Action.SITE_IMPORT, "allowed", e.site_id) for e in events]
        await registry.audit(entries)
        await registry.store.put_sites(events, olds)
        await registry.publish_all(events)
    errors.sort(key=lambda e: e.row)
    return bulk.ImportReport(
        accepted=len(events), rejected=len(errors), site_ids=[e.site_id for e in events], errors=errors
    )


def mount(api: FastAPI, registry: Registry, import_max_rows: int) -> None:
    """Add the registry routes to the service's FastAPI app."""
    api.state.import_max_rows = import_max_rows
    api.state.registry = registry
    api.include_router(build_router(registry))
