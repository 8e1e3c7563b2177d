"""OpenAI wire shapes of the Files API (field order as api.openai.com sends it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from service.db.models import File

UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "user_data", "vision", "evals")
FileStatus = Literal["uploaded", "processed", "error"]


class FileObject(BaseModel):
    object: Literal["file"] = "file"
    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None
    status: FileStatus
    status_details: str | None = None

    @classmethod
    def from_row(cls, row: File) -> FileObject:
        return cls(
            id=row.id,
            purpose=row.purpose,
            filename=row.filename,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            status="processed" if row.status == "processed" else "error",
        )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    object: Literal["file"] = "file"
    deleted: bool
    id: str
