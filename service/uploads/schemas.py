"""OpenAI wire shapes of the Uploads API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.db.models import Upload as UploadRow
from service.db.models import UploadPart as PartRow
from service.files.schemas import UPLOAD_PURPOSES, FileObject

UploadStatus = Literal["pending", "completed", "cancelled", "expired"]
# The service checks these (in OpenAI's words); the schema says them too.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: str = Field(json_schema_extra={"enum": ["created_at"]})
    seconds: int = Field(json_schema_extra={"minimum": 3600, "maximum": 30 * 24 * 3600})


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1)
    purpose: str = Field(json_schema_extra={"enum": list(UPLOAD_PURPOSES)})
    bytes: int = Field(ge=1, json_schema_extra={"maximum": MAX_UPLOAD_BYTES})
    mime_type: str
    expires_after: ExpiresAfter | None = None


class CompleteUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part_ids: list[str] = Field(json_schema_extra={"minItems": 1, "uniqueItems": True})
    md5: str | None = None


class Upload(BaseModel):
    """``file`` appears only once completed: api.openai.com leaves the key out before."""

    object: Literal["upload"] = "upload"
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: UploadStatus
    expires_at: int
    file: FileObject | None = None

    @classmethod
    def from_row(cls, row: UploadRow, file: FileObject | None = None) -> Upload:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            expires_at=row.expires_at,
            file=file,
        )


class UploadPart(BaseModel):
    object: Literal["upload.part"] = "upload.part"
    id: str
    created_at: int
    upload_id: str

    @classmethod
    def from_row(cls, row: PartRow) -> UploadPart:
        return cls(id=row.id, created_at=row.created_at, upload_id=row.upload_id)
