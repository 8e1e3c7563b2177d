"""A vLLM plugin that lets a replica with an empty disk serve any ``ft:`` model: asked for a name
it does not hold, it fetches the adapter through ``inference.adapter_source`` (OpenFT's database,
then the blob store into its own cache folder, once however many first requests arrive together).

Registered as the ``vllm.general_plugins`` entry point ``openft_adapters``, which vLLM calls in
each of its processes; it acts only where ``OPENFT_VLLM_ADAPTERS_FROM_BLOBS`` is true (with the
deployment's database and blob store settings), and otherwise imports nothing more. A deleted
model is never resolved again (its job is marked deleted)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("openft.lora_resolver")
ENABLED = ("1", "true", "yes", "on")


def register() -> None:
    """vLLM calls this in each of its processes at start-up."""
    if os.environ.get("OPENFT_VLLM_ADAPTERS_FROM_BLOBS", "").strip().lower() not in ENABLED:
        return
    # Only inside vLLM, and only when enabled (the API process never imports them).
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    from inference.adapter_source import AdapterSource
    from service.settings import Settings

    source = AdapterSource(Settings())

    class OpenFTResolver(LoRAResolver):
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
            try:
                folder = await source.fetch(lora_name)
            except Exception:
                log.exception("could not fetch the adapter of %s", lora_name)
                return None
            if folder is None:
                return None
            log.info("pulled the adapter of %s into %s", lora_name, folder)
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    if "OpenFT" not in LoRAResolverRegistry.get_supported_resolvers():
        LoRAResolverRegistry.register_resolver("OpenFT", OpenFTResolver())
