"""Getting a job's adapter into vLLM: publish it to an immutable local folder, then load it.

vLLM's own adapter list is the truth: a name it does not list is loaded (one load at a time per
adapter), and "already loaded" counts as success.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from inference.upstreams import Upstream
from inference.vllm_client import VLLMClient
from service.blobstore import BlobStore, download_folder
from service.blobstore.keys import FINAL, adapter_prefix
from service.errors import ServiceUnavailableError

ADAPTER_VERSION = "v1"  # bump when the published layout changes; folders are never rewritten


@dataclass(frozen=True)
class AdapterRef:
    """A fine-tuned model: its ``ft:`` name, the job that trained it, and its base model.

    ``variant`` says which of the job's adapters: ``final``, or ``step-N`` for a checkpoint.
    """

    name: str
    job_id: str
    base_model: str
    variant: str = FINAL


def publish_adapter(blobs: BlobStore, root: Path, job_id: str, variant: str) -> Path:
    """Copy a job's adapter blobs into ``root/<job id>/<variant>/<version>`` once (atomic
    rename; the folder never changes after)."""
    target = root / job_id / variant / ADAPTER_VERSION
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=target.parent))
    download_folder(blobs, adapter_prefix(job_id, variant), staging)
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, target)
    except OSError:  # another request published it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


class AdapterLoader:
    def __init__(
        self, blobs: BlobStore, root: Path, vllm: VLLMClient, *, pulled_by_vllm: bool = False
    ) -> None:
        """``pulled_by_vllm``: the vLLM servers fetch adapters from the blob store themselves
        (``inference.lora_resolver``), so nothing is published here or loaded by path."""
        self.blobs = blobs
        self.root = root
        self.vllm = vllm
        self.pulled_by_vllm = pulled_by_vllm
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def ensure(
        self, upstream: Upstream, adapter: AdapterRef, *, refresh: bool = False
    ) -> None:
        """Make sure vLLM serves ``adapter``; ``refresh`` re-reads vLLM's list first."""
        if self.pulled_by_vllm or (adapter.name in upstream.loaded and not refresh):
            return
        async with self._locks[adapter.name]:
            if refresh:
                upstream.loaded.discard(adapter.name)
            if adapter.name in upstream.loaded:
                return
            if adapter.name not in await self.vllm.served_models(upstream.base_url):
                folder = await run_in_threadpool(self.publish, adapter)
                await self._load(upstream, adapter, folder)
            upstream.loaded.add(adapter.name)

    def publish(self, adapter: AdapterRef) -> Path:
        return publish_adapter(self.blobs, self.root, adapter.job_id, adapter.variant)

    def forget(self, model: str) -> None:
        """Drop a deleted model's load lock (unless a load holds it)."""
        lock = self._locks.get(model)
        if lock is not None and not lock.locked():
            del self._locks[model]

    def unpublish(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    async def unload(self, upstream: Upstream, name: str) -> None:
        await self.vllm.unload_adapter(upstream.base_url, name)
        upstream.loaded.discard(name)

    async def _load(self, upstream: Upstream, adapter: AdapterRef, folder: Path) -> None:
        if not await self.vllm.load_adapter(upstream.base_url, adapter.name, str(folder)):
            raise ServiceUnavailableError(
                f"The model {adapter.name} could not be loaded; try again shortly.",
                headers={"retry-after": "2"},
            )
