"""Service settings, read once from the environment (``OPENFT_*``) and passed down explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Everything a process of OpenFT needs to know about its deployment."""

    model_config = SettingsConfigDict(env_prefix="OPENFT_", frozen=True)

    data_dir: Path = Field(default=Path("data"), description="Root folder for local state.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file `openft.db` in the data dir.",
    )
    blob_dir: Path | None = Field(
        default=None, description="Folder of the local blob store; default `<data_dir>/blobs`."
    )
    max_file_bytes: int = Field(
        default=512 * MIB, gt=0, description="Largest file `/v1/files` accepts."
    )
    max_line_bytes: int = Field(
        default=64 * MIB, gt=0, description="Longest line a fine-tune JSONL file may have."
    )
    max_filename_chars: int = Field(default=255, gt=0)
    expiry_sweep_seconds: float = Field(
        default=300.0, gt=0, description="How often expired files are deleted."
    )

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        data_dir = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'openft.db'}")
        if self.blob_dir is None:
            object.__setattr__(self, "blob_dir", data_dir / "blobs")
        return self

    @property
    def blob_root(self) -> Path:
        assert self.blob_dir is not None  # filled by the validator
        return self.blob_dir

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
