"""Registry rules without I/O: roles, consent, access decisions, the audit hash chain, HTTP models."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridpool_shared.messages.base import SiteId, UtcDatetime
from hybridpool_shared.messages.registry import AuditRecorded, SiteMasterData, SiteMasterDataChanged

GENESIS_HASH = "0" * 64
Purpose = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,39}$", description="Why data is used.")]


class Role(StrEnum):
    """What a principal may do (HP-Hub roles)."""

    INSTALLER = "installer"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    USER = "user"


class Action(StrEnum):
    """Everything a request can do to the registry; the audit log names these."""

    SITE_CREATE = "site.create"
    SITE_UPDATE = "site.update"
    SITE_DELETE = "site.delete"
    SITE_READ = "site.read"
    SITE_IMPORT = "site.import"
    SITE_EXPORT = "site.export"
    OPS_READ = "operational.read"
    SETTINGS_WRITE = "settings.write"
    STATUS_WRITE = "status.write"
    CONSENT_READ = "consent.read"
    CONSENT_GRANT = "consent.grant"
    CONSENT_REVOKE = "consent.revoke"
    AUDIT_READ = "audit.read"
    OPERATION_RECORD = "operation.record"
    LOGIN = "login"


@dataclass(frozen=True)
class Principal:
    """An authenticated person or system."""

    id: str
    role: Role


class Strict(BaseModel):
    """HTTP body: unknown fields refused, JSON types coerced only where lossless."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteMasterDataIn(SiteMasterData):
    """Master data as an installer sends it (lax JSON/CSV types; the event adds who and when)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    def to_event(self, installer_id: str, now: datetime) -> SiteMasterDataChanged:
        """Return the event that records this master data."""
        payload = self.model_dump(mode="json") | {"changed_at": now.isoformat(), "installer_id": installer_id}
        return SiteMasterDataChanged.model_validate_json(json.dumps(payload))


class SiteSettings(Strict):
    """Operational settings of a site (HP-Hub 201–204)."""

    wanted_indoor_temp_c: float = Field(default=21.0, ge=5, le=30, description="HP-Hub 201.")
    wanted_dhw_temp_c: float = Field(default=50.0, ge=35, le=70, description="HP-Hub 201.")
    control_location: Literal["local", "remote"] = Field(default="remote", description="HP-Hub 202.")
    control_mode: Literal["direct", "planned"] = Field(default="planned", description="HP-Hub 203.")
    maintenance_codes: tuple[Annotated[str, Field(max_length=20)], ...] = Field(
        default=(), max_length=20, description="HP-Hub 204."
    )


class SiteStatus(Strict):
    """Operational status of a site (HP-Hub 301–305)."""

    gateway: Literal["ok", "no_service", "fault"] = Field(description="HP-Hub 301.")
    data_link: Literal["ok", "degraded", "down"] = Field(description="HP-Hub 302.")
    heat_pump: Literal["ok", "off", "fault"] = Field(description="HP-Hub 303.")
    maintenance: Literal["none", "due", "in_progress"] = Field(description="HP-Hub 304.")
    sg_ready_mode: int = Field(ge=1, le=4, description="HP-Hub 305: SG Ready state 1–4.")
    reported_at: UtcDatetime


class ConsentGrant(Strict):
    """The owner lets one actor use the site's operational data for one purpose until expiry."""

    actor_id: str = Field(min_length=1, max_length=64)
    purpose: Purpose
    expires_at: UtcDatetime


class Consent(Strict):
    """A stored consent with its history."""

    site_id: SiteId
    actor_id: str
    purpose: str
    granted_at: UtcDatetime
    expires_at: UtcDatetime
    revoked_at: UtcDatetime | None = None

    def active(self, now: datetime) -> bool:
        """Return True while granted, not revoked and not expired."""
        return self.revoked_at is None and self.expires_at > now

    @model_validator(mode="after")
    def _expiry_after_grant(self) -> Self:
        if self.expires_at <= self.granted_at:
            raise ValueError("expires_at must be after granted_at")
        return self


@dataclass(frozen=True)
class Decision:
    """Whether a request may proceed, and why not."""

    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.INSTALLER: frozenset(
        {Action.SITE_CREATE, Action.SITE_UPDATE, Action.SITE_DELETE, Action.SITE_READ}
        | {Action.SITE_IMPORT, Action.SITE_EXPORT}
    ),
    Role.OPERATOR: frozenset(
        {
            Action.SITE_READ,
            Action.OPS_READ,
            Action.SETTINGS_WRITE,
            Action.STATUS_WRITE,
            Action.OPERATION_RECORD,
        }
    ),
    Role.AUDITOR: frozenset({Action.AUDIT_READ}),
    Role.USER: frozenset(
        {Action.SITE_READ, Action.OPS_READ, Action.SETTINGS_WRITE}
        | {Action.CONSENT_READ, Action.CONSENT_GRANT, Action.CONSENT_REVOKE}
    ),
}


def role_allows(principal: Principal, action: Action) -> Decision:
    """Function-level check: may this role do this kind of thing at all?"""
    if action in ROLE_ACTIONS[principal.role]:
        return ALLOW
    return _deny(f"role {principal.role} may not {action}")


def site_access(
    principal: Principal,
    action: Action,
    site: SiteMasterDataChanged | None,
    consents: list[Consent],
    purpose: str | None,
    now: datetime,
) -> Decision:
    """Object-level check of one action on one site (None: the site does not exist)."""
    by_role = role_allows(principal, action)
    if not by_role.allowed:
        return by_role
    if site is None:
        return _deny("unknown site") if principal.role is not Role.INSTALLER else ALLOW
    if principal.role is Role.INSTALLER:
        mine = site.installer_id == principal.id
        return ALLOW if mine else _deny(f"site {site.site_id} was installed by another installer")
    if principal.role is Role.USER:
        return (
            ALLOW if site.owner_id == principal.id else _deny(f"{principal.id} does not own {site.site_id}")
        )
    return _operator_access(principal, action, site.site_id, consents, purpose, now)


def _operator_access(
    principal: Principal,
    action: Action,
    site_id: str,
    consents: list[Consent],
    purpose: str | None,
    now: datetime,
) -> Decision:
    mine = [c for c in consents if c.actor_id == principal.id and c.active(now)]
    if action is Action.SITE_READ:
        return ALLOW if mine else _deny(f"no active consent of the owner of {site_id}")
    if purpose is None:
        return _deny("operational data needs a purpose (query parameter `purpose`)")
    if any(c.purpose == purpose for c in mine):
        return ALLOW
    return _deny(f"no active consent of the owner of {site_id} for purpose {purpose!r}")


def record_hash(fields: dict[str, Any]) -> str:
    """Return the SHA-256 of an audit record's canonical JSON without its own hash."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class OperationRecordIn(Strict):
    """An operator's action taken in another system (e.g. the ops room), for the one audit chain."""

    source: str = Field(pattern=r"^[a-z][a-z0-9_]{1,19}$", description="The system, e.g. opsroom.")
    action: str = Field(
        pattern=r"^[a-z][a-z0-9_.-]{1,42}$",
        description="What was done, e.g. site.exclude (source:action fits an audit record's 64).",
    )
    outcome: Literal["allowed", "denied", "error"] = "allowed"
    site_id: SiteId | None = None
    detail: str = Field(default="", max_length=2000)


@dataclass(frozen=True)
class AuditEntry:
    """What to record: the chain position and hashes are added when it is appended."""

    actor_id: str
    role: str
    action: str
    outcome: str
    site_id: str | None = None
    purpose: str = ""
    detail: str = ""


def chain(entries: list[AuditEntry], seq: int, prev_hash: str, now: datetime) -> list[AuditRecorded]:
    """Link entries after the record (seq − 1, prev_hash) into hash-chained audit records."""
    records = []
    for offset, entry in enumerate(entries):
        fields = {
            "schema_version": 1,
            "seq": seq + offset,
            "recorded_at": now,
            "actor_id": _clean(entry.actor_id, 64) or "anonymous",
            "role": entry.role,
            "action": entry.action,
            "site_id": entry.site_id,
            "purpose": _clean(entry.purpose, 120),
            "outcome": entry.outcome,
            "detail": _clean(entry.detail, 2000),
            "prev_hash": prev_hash,
        }
        draft = AuditRecorded.model_validate({**fields, "hash": GENESIS_HASH}, strict=False)
        digest = record_hash(draft.model_dump(mode="json"))
        record = draft.model_copy(update={"hash": digest})
        records.append(record)
        prev_hash = digest
    return records


def _clean(text: str, limit: int) -> str:
    # Log injection (CWE-117): no control characters in the trail.
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


@dataclass(frozen=True)
class ChainReport:
    """The result of verifying the audit chain."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(raw_records: list[bytes], start_seq: int = 0, prev_hash: str = GENESIS_HASH) -> ChainReport:
    """Recompute every hash and link; report the first record that does not fit."""
    for index, raw in enumerate(raw_records):
        seq = start_seq + index
        try:
            fields = json.loads(raw)
        except ValueError:
            return ChainReport(False, index, seq, "not JSON")
        if fields.get("seq") != seq:
            return ChainReport(False, index, seq, f"sequence {fields.get('seq')} where {seq} was expected")
        if fields.get("prev_hash") != prev_hash:
            return ChainReport(False, index, seq, "prev_hash does not match the previous record")
        if record_hash(fields) != fields.get("hash"):
            return ChainReport(False, index, seq, "hash does not match the record's content")
        prev_hash = fields["hash"]
    return ChainReport(True, len(raw_records))
