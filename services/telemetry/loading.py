"""Loading what Redis holds of sites the process has not seen yet, started early to overlap parsing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from services.telemetry.adapters import LiveStateStore, LoadedSites


def _retrieve(task: asyncio.Task[LoadedSites]) -> None:
    """Mark a discarded load's failure as seen (the batch that needs it loads again)."""
    if not task.cancelled():
        task.exception()


class SiteLoader:
    """Loads sites from Redis; a load can be started ahead, when a batch is fetched, and taken later.

    A load started ahead is used only by the same generation (the pipeline counts its resets): after a
    reset the process forgets its sites and what Redis held before may since have been rewritten.
    """

    def __init__(self, store: LiveStateStore) -> None:
        self.store = store
        self._ahead: tuple[int, asyncio.Task[LoadedSites]] | None = None

    def start(self, site_ids: Sequence[str], generation: int) -> None:
        """Begin loading the given sites in the background, replacing a load started earlier."""
        self.discard()
        if site_ids:
            task = asyncio.create_task(self.store.load_sites(site_ids))
            task.add_done_callback(_retrieve)
            self._ahead = (generation, task)

    def discard(self) -> None:
        """Drop the load started ahead, if any."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    async def load(self, site_ids: Sequence[str], generation: int) -> LoadedSites:
        """Return the given sites as Redis holds them, taking what a load started ahead has of them."""
        ahead, self._ahead = self._ahead, None
        loaded = LoadedSites()
        if ahead is not None and ahead[0] == generation:
            with contextlib.suppress(Exception):  # it failed: load again below, and fail there if need be
                loaded = await ahead[1]
        elif ahead is not None:
            ahead[1].cancel()
        missing = [s for s in site_ids if s not in loaded.site_ids]
        if missing:
            loaded = loaded.merged(await self.store.load_sites(missing))
        return loaded
