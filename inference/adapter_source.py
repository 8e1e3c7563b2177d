"""Where a vLLM replica gets the adapters it is asked for by name (``inference.lora_resolver``):
OpenFT's database says which job's adapter an ``ft:`` name is, and the blob store has its files,
copied once into the replica's own cache folder."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from inference.adapters import publish_adapter
from service.blobstore import BlobStore, open_blob_store
from service.db.database import Database
from service.jobs import repository
from service.settings import Settings


class AdapterSource:
    """Where a replica finds adapters: OpenFT's database (the name) and blob store (the files)."""

    def __init__(self, settings: Settings) -> None:
        self.db = Database(settings.database_url)
        self.blobs: BlobStore = open_blob_store(settings)
        self.cache = settings.vllm_adapter_cache_dir or settings.data_dir / "adapter-cache"
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def fetch(self, name: str) -> Path | None:
        """The local folder of ``name``'s adapter, pulled on first use; None if no such model."""
        if not name.startswith("ft:"):
            return None
        async with self._locks[name]:  # concurrent first requests pull once
            return await asyncio.to_thread(self._fetch, name)

    def _fetch(self, name: str) -> Path | None:
        with self.db.read() as session:
            found = repository.adapter_named(session, name)
        if found is None:
            return None
        return publish_adapter(self.blobs, self.cache, found.job_id, found.variant)
