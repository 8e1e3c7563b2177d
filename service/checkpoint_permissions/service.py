"""Sharing fine-tuned models: an admin grants other projects a model or checkpoint (they may
call it and train from it, and see nothing else of its owner's), lists and revokes the grants.
The gateway and the jobs service read grants on every request (``jobs.repository.shared_by``),
so a revoke holds on the next request in every API process."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from service.auth.principal import Admin
from service.db.clock import database_now
from service.db.database import Database
from service.db.models import CheckpointPermission, Project
from service.errors import InvalidRequestError, NotFoundError, no_such_object
from service.ids import new_checkpoint_permission_id
from service.jobs import repository as jobs_repository
from service.pagination import Cursor, after_cursor, cursor_page, list_envelope, split_page

KIND = "checkpoint permission"


class CreatePermissionsRequest(BaseModel):
    """``POST /v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions``."""

    model_config = ConfigDict(extra="forbid")

    project_ids: list[str] = Field(
        min_length=1, max_length=100, description="The projects that may use the model."
    )


def permission_object(row: CheckpointPermission) -> dict[str, Any]:
    return {
        "object": "checkpoint.permission",
        "id": row.id,
        "created_at": row.created_at,
        "project_id": row.project_id,
    }


class CheckpointPermissionsService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, admin: Admin, checkpoint: str, request: CreatePermissionsRequest
    ) -> dict[str, Any]:
        """Grant each project (a grant that exists is returned as it is)."""
        with self.db.write() as session:
            owner = _owner_of(session, checkpoint)
            now = database_now(session)
            granted = []
            for index, named in enumerate(dict.fromkeys(request.project_ids)):
                param = f"project_ids[{index}]"
                project_id = session.scalar(
                    select(Project.id).where(or_(Project.id == named, Project.slug == named))
                )  # a project id, as OpenAI's, or OpenFT's slug
                if project_id is None:
                    raise NotFoundError(f"No such project: {named}", param=param)
                if project_id == owner:
                    raise InvalidRequestError(
                        f"Project {project_id} owns {checkpoint}; it needs no permission.",
                        param=param,
                    )
                row = session.scalars(
                    select(CheckpointPermission).where(
                        CheckpointPermission.checkpoint == checkpoint,
                        CheckpointPermission.project_id == project_id,
                    )
                ).one_or_none()
                if row is None:
                    row = CheckpointPermission(
                        id=new_checkpoint_permission_id(),
                        checkpoint=checkpoint,
                        owner_project_id=owner,
                        project_id=project_id,
                        created_at=now,
                    )
                    session.add(row)
                granted.append(row)
            session.flush()
            return list_envelope([permission_object(row) for row in granted], False)

    def list(
        self,
        admin: Admin,
        checkpoint: str,
        *,
        project_id: str | None,
        after: str | None,
        limit: int,
        order: Literal["ascending", "descending"],
    ) -> dict[str, Any]:
        with self.db.read() as session:
            _owner_of(session, checkpoint)
            filters = [CheckpointPermission.checkpoint == checkpoint]
            if project_id is not None:
                filters.append(CheckpointPermission.project_id == project_id)

            def position(permission_id: str) -> Select[int]:
                return select(CheckpointPermission.seq).where(
                    CheckpointPermission.id == permission_id, *filters
                )

            def fetch(cursor: Cursor) -> list[CheckpointPermission]:
                query = after_cursor(
                    select(CheckpointPermission).where(*filters),
                    CheckpointPermission.seq,
                    cursor,
                    "desc" if order == "descending" else "asc",
                )
                return list(session.scalars(query.limit(limit + 1)))

            rows = cursor_page(session, after, position, fetch, KIND)
            page, has_more = split_page(rows, limit)
            return list_envelope([permission_object(row) for row in page], has_more)

    def delete(self, admin: Admin, checkpoint: str, permission_id: str) -> dict[str, Any]:
        """Revoke a grant: the project's next request for the model is a 404."""
        with self.db.write() as session:
            _owner_of(session, checkpoint)
            row = session.scalars(
                select(CheckpointPermission).where(
                    CheckpointPermission.id == permission_id,
                    CheckpointPermission.checkpoint == checkpoint,
                )
            ).one_or_none()
            if row is None:
                raise no_such_object(KIND, permission_id, param="permission_id")
            session.delete(row)
        return {"object": "checkpoint.permission", "id": permission_id, "deleted": True}


def _owner_of(session: Session, checkpoint: str) -> str:
    """The project that owns the fine-tuned model or checkpoint ``checkpoint`` (any project's:
    admins act for the whole deployment); 404 for a name no servable model has."""
    found = jobs_repository.servable_owner(session, checkpoint)
    if found is None:
        raise NotFoundError(
            f"The model `{checkpoint}` does not exist.",
            param="fine_tuned_model_checkpoint",
            code="model_not_found",
        )
    return found[0]
