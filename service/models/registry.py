"""Which base models can be fine-tuned, from configuration (the demo model when none is set)."""

from __future__ import annotations

from pathlib import Path

from service.settings import BaseModelConfig, Settings


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self._models = {model.name: model for model in settings.fine_tunable_models}

    def all(self) -> list[BaseModelConfig]:
        return list(self._models.values())

    def get(self, name: str) -> BaseModelConfig | None:
        return self._models.get(name)

    @staticmethod
    def created_at(model: BaseModelConfig) -> int:
        """When a local model appeared on disk; 0 for hub ids we have not resolved."""
        path = Path(model.path)
        return int(path.stat().st_mtime) if path.exists() else 0
