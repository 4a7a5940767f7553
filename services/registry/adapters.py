"""Redis storage of the registry: sites, operational data, consents, principals, tokens, audit chain."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from hybridpool_shared.messages.registry import AuditRecorded, SiteMasterDataChanged
from services.registry.domain import (
    GENESIS_HASH,
    AuditEntry,
    Consent,
    Principal,
    Role,
    SiteSettings,
    SiteStatus,
    chain,
)

# Appends records only if the chain head is still the one they were linked to: atomic, no lost links.
APPEND_IF_HEAD = """
local head = redis.call('GET', KEYS[2]) or ''
if head ~= ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
APPEND_ATTEMPTS = 50
# Clears an outbox entry only if it still holds the event that was published (a newer one stays).
DELETE_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


class StoredPrincipal(BaseModel):
    """A principal with its salted secret hash (scrypt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")
    role: Role
    salt_hex: str
    secret_hash_hex: str

    @classmethod
    def create(cls, principal_id: str, role: Role, secret: str) -> StoredPrincipal:
        """Hash a new secret with a fresh salt."""
        salt = secrets.token_bytes(16)
        return cls(
            id=principal_id, role=role, salt_hex=salt.hex(), secret_hash_hex=_scrypt(secret, salt).hex()
        )

    def check(self, secret: str) -> bool:
        """Return True if secret matches, in constant time."""
        computed = _scrypt(secret, bytes.fromhex(self.salt_hex))
        return hmac.compare_digest(computed, bytes.fromhex(self.secret_hash_hex))


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Keys:
    """Redis key names under one prefix."""

    prefix: str

    def __getattr__(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def of(self, kind: str, ident: str) -> str:
        """Return the key of one object of a kind."""
        return f"{self.prefix}:{kind}:{ident}"


class RegistryStore:
    """All registry state in Redis (run it with AOF): the registry is the system of record."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "registry") -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._append = redis.register_script(APPEND_IF_HEAD)
        self._delete_if_same = redis.register_script(DELETE_IF_SAME)

    # principals and tokens
    async def put_principals(self, principals: Iterable[StoredPrincipal]) -> None:
        """Create or replace principals."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for principal in principals:
                pipe.hset(self.keys.principals, principal.id, principal.model_dump_json())
            await pipe.execute()

    async def principal(self, principal_id: str) -> StoredPrincipal | None:
        """Return a stored principal."""
        raw = await self.redis.hget(self.keys.principals, principal_id)
        return StoredPrincipal.model_validate_json(raw) if raw else None

    async def issue_token(self, principal: Principal, ttl_s: int) -> str:
        """Return a new bearer token for a principal; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        value = f"{principal.role}|{principal.id}"
        await self.redis.set(self.keys.of("token", _token_key(token)), value, ex=ttl_s)
        return token

    async def token_principal(self, token: str) -> Principal | None:
        """Return who a bearer token belongs to, if it is valid."""
        raw = await self.redis.get(self.keys.of("token", _token_key(token)))
        if raw is None:
            return None
        role, principal_id = _text(raw).split("|", 1)
        return Principal(principal_id, Role(role))

    # sites
    async def site(self, site_id: str) -> SiteMasterDataChanged | None:
        """Return a site's master data."""
        raw = await self.redis.hget(self.keys.sites, site_id)
        return SiteMasterDataChanged.from_json_bytes(raw) if raw else None

    async def sites(self, site_ids: list[str]) -> list[SiteMasterDataChanged | None]:
        """Return several sites in one round trip."""
        if not site_ids:
            return []
        raws = await self.redis.hmget(self.keys.sites, site_ids)
        return [SiteMasterDataChanged.from_json_bytes(r) if r else None for r in raws]

    async def put_sites(
        self, sites: list[SiteMasterDataChanged], previous: list[SiteMasterDataChanged | None]
    ) -> None:
        """Store sites and their installer/owner indexes in one pipelined transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for site, old in zip(sites, previous, strict=True):
                if old is not None and old.owner_id != site.owner_id:
                    pipe.srem(self.keys.of("owner_sites", old.owner_id), site.site_id)
                pipe.hset(self.keys.sites, site.site_id, site.to_json_bytes())
                pipe.hset(self.keys.outbox, site.site_id, site.to_json_bytes())
                pipe.sadd(self.keys.of("installer_sites", site.installer_id), site.site_id)
                if site.owner_id:
                    pipe.sadd(self.keys.of("owner_sites", site.owner_id), site.site_id)
            await pipe.execute()

    async def delete_site(self, site: SiteMasterDataChanged, deletion: SiteMasterDataChanged) -> None:
        """Remove a site and its operational data; queue the deletion record for publishing."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.sites, site.site_id)
            pipe.hset(self.keys.outbox, site.site_id, deletion.to_json_bytes())
            pipe.hdel(self.keys.settings, site.site_id)
            pipe.hdel(self.keys.status, site.site_id)
            pipe.srem(self.keys.of("installer_sites", site.installer_id), site.site_id)
            pipe.srem(self.keys.of("owner_sites", site.owner_id), site.site_id)
            await pipe.execute()

    async def site_ids_of(self, kind: str, principal_id: str) -> list[str]:
        """Return the sites indexed for a principal: installer_sites, owner_sites or actor_sites."""
        members = await self.redis.smembers(self.keys.of(kind, principal_id))
        return sorted(_text(m) for m in members)

    # outbox: site events written with the state, cleared once the broker confirmed them
    async def outbox(self, limit: int) -> list[SiteMasterDataChanged]:
        """Return up to limit site events not yet confirmed as published."""
        items: list[SiteMasterDataChanged] = []
        async for _, raw in self.redis.hscan_iter(self.keys.outbox, count=limit):
            items.append(SiteMasterDataChanged.from_json_bytes(raw))
            if len(items) >= limit:
                break
        return items

    async def published(self, events: list[SiteMasterDataChanged]) -> None:
        """Clear outbox entries that still hold exactly these events."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                await self._delete_if_same(
                    keys=[self.keys.outbox], args=[event.site_id, event.to_json_bytes()], client=pipe
                )
            await pipe.execute()

    # operational data
    async def settings(self, site_id: str) -> SiteSettings:
        """Return a site's settings (defaults until set)."""
        raw = await self.redis.hget(self.keys.settings, site_id)
        return SiteSettings.model_validate_json(raw) if raw else SiteSettings()

    async def put_settings(self, site_id: str, value: SiteSettings) -> None:
        """Store a site's settings."""
        await self.redis.hset(self.keys.settings, site_id, value.model_dump_json())

    async def status(self, site_id: str) -> SiteStatus | None:
        """Return a site's last reported status."""
        raw = await self.redis.hget(self.keys.status, site_id)
        return SiteStatus.model_validate_json(raw) if raw else None

    async def put_status(self, site_id: str, value: SiteStatus) -> None:
        """Store a site's status."""
        await self.redis.hset(self.keys.status, site_id, value.model_dump_json())

    # consents
    async def consents(self, site_id: str) -> list[Consent]:
        """Return every consent (active or not) given for a site."""
        raw = await self.redis.hvals(self.keys.of("consents", site_id))
        return sorted((Consent.model_validate_json(r) for r in raw), key=lambda c: (c.actor_id, c.purpose))

    async def put_consent(self, consent: Consent) -> None:
        """Store a consent and index the site for its actor."""
        async with self.redis.pipeline(transaction=True) as pipe:
            field = f"{consent.actor_id}|{consent.purpose}"
            pipe.hset(self.keys.of("consents", consent.site_id), field, consent.model_dump_json())
            pipe.sadd(self.keys.of("actor_sites", consent.actor_id), consent.site_id)
            await pipe.execute()

    # audit chain
    async def append_audit(self, entries: list[AuditEntry], now: datetime) -> list[AuditRecorded]:
        """Append entries to the hash chain atomically; retried if another writer got in first."""
        for _ in range(APPEND_ATTEMPTS):
            raw_head = await self.redis.get(self.keys.audit_head)
            head = _text(raw_head) if raw_head else ""
            seq, prev = _parse_head(head)
            records = chain(entries, seq, prev, now)
            last = records[-1]
            new_head = f"{last.seq + 1}|{last.hash}"
            args = [head, new_head, *(r.model_dump_json() for r in records)]
            if await self._append(keys=[self.keys.audit, self.keys.audit_head], args=args):
                return records
        raise RuntimeError("audit chain contended: could not append")

    async def audit_range(self, start: int, stop: int) -> list[bytes]:
        """Return raw audit records by sequence number, inclusive."""
        raws = await self.redis.lrange(self.keys.audit, start, stop)
        return [r.encode() if isinstance(r, str) else r for r in raws]

    async def audit_length(self) -> int:
        """Return how many records the chain has."""
        return int(await self.redis.llen(self.keys.audit))

    async def published_cursor(self) -> int:
        """Return the sequence number of the first audit record not yet published."""
        raw = await self.redis.get(self.keys.audit_published)
        return int(raw) if raw else 0

    async def set_published_cursor(self, value: int) -> None:
        """Move the publication cursor forward."""
        await self.redis.set(self.keys.audit_published, value)


def _parse_head(head: str) -> tuple[int, str]:
    if not head:
        return 0, GENESIS_HASH
    seq, digest = head.split("|", 1)
    return int(seq), digest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
