"""Redis view of the registry as the balance service needs it."""

from __future__ import annotations

import redis.asyncio as aioredis

from hybridpool_shared.messages import SiteMasterDataChanged

SITES_KEY = "balance:sites"


class SiteView:
    """Sites known from `sites.registry`, kept in a Redis hash so restarts need no replay."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def upsert(self, site: SiteMasterDataChanged) -> None:
        """Store or remove a site."""
        if site.deleted:
            await self.redis.hdel(SITES_KEY, site.site_id)
        else:
            await self.redis.hset(SITES_KEY, site.site_id, site.to_json_bytes())

    async def all(self) -> list[SiteMasterDataChanged]:
        """Return every known site."""
        raw = await self.redis.hvals(SITES_KEY)
        return [SiteMasterDataChanged.from_json_bytes(value) for value in raw]
