"""Issuing keys (for the CLI) and authenticating requests (for the API)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from service.auth import repository
from service.auth.key_cache import KeyCache, KeyChanges
from service.auth.keys import (
    generate_admin_key,
    generate_api_key,
    hash_api_key,
    mask_api_key,
    redact_api_key,
)
from service.auth.principal import Admin, Principal
from service.db.database import Database
from service.db.models import AdminKey, ApiKey, Project
from service.errors import AuthenticationError, InvalidRequestError, NotFoundError
from service.ids import new_admin_key_id, new_api_key_id, new_project_id

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). An operator can create one with "
    "`openft keys create --project <slug>`."
)


@dataclass(frozen=True)
class IssuedKey:
    key: str
    key_id: str
    project_id: str
    project_slug: str
    project_created: bool


INSUFFICIENT_PERMISSIONS = (
    "You have insufficient permissions for this operation: it needs an admin key, and project "
    "keys are not admin keys. An operator can create one with `openft keys create --admin`."
)


@dataclass(frozen=True)
class IssuedAdminKey:
    key: str
    key_id: str


@dataclass(frozen=True)
class KeyListing:
    key_id: str
    project_slug: str
    redacted: str
    name: str | None
    created_at: int
    revoked_at: int | None


class AccessService:
    def __init__(self, db: Database, *, key_cache_seconds: float = 0.0) -> None:
        """``key_cache_seconds``: how long a good key may be trusted without a query (an API
        process's setting; 0 checks every request against the database)."""
        self._db = db
        self._changes = KeyChanges(db)
        self._cache = KeyCache(self._changes, key_cache_seconds)

    def close(self) -> None:
        self._changes.close()

    def issue_key(self, project_slug: str, name: str | None = None) -> IssuedKey:
        """A new key for ``project_slug``, creating the project on first use."""
        if not SLUG.fullmatch(project_slug):
            raise InvalidRequestError(
                f"{project_slug!r} is not a valid project slug (lowercase letters, digits and '-', "
                "at most 63 characters, starting with a letter or digit)",
                param="project",
            )
        key = generate_api_key()
        now = int(time.time())
        with self._db.write() as session:
            project = repository.project_by_slug(session, project_slug)
            created = project is None
            if project is None:
                project = Project(id=new_project_id(), slug=project_slug, created_at=now)
                session.add(project)
                session.flush()
            row = ApiKey(
                id=new_api_key_id(),
                project_id=project.id,
                key_hash=hash_api_key(key),
                redacted=redact_api_key(key),
                name=name,
                created_at=now,
            )
            session.add(row)
        return IssuedKey(key, row.id, project.id, project.slug, created)

    def has_projects(self) -> bool:
        with self._db.read() as session:
            return repository.any_project(session)

    def issue_admin_key(self, name: str | None = None) -> IssuedAdminKey:
        """A new admin key: it may call the admin routes, and no project's."""
        key = generate_admin_key()
        with self._db.write() as session:
            row = AdminKey(
                id=new_admin_key_id(),
                key_hash=hash_api_key(key),
                redacted=redact_api_key(key),
                name=name,
                created_at=int(time.time()),
            )
            session.add(row)
        return IssuedAdminKey(key, row.id)

    def list_keys(self, project_slug: str | None = None) -> list[KeyListing]:
        """Project keys (of ``project_slug`` only, when given), then admin keys (as project
        ``(admin)``) when no project is asked for."""
        with self._db.read() as session:
            listed = [
                KeyListing(k.id, p.slug, k.redacted, k.name, k.created_at, k.revoked_at)
                for k, p in repository.keys_with_projects(session, project_slug)
            ]
            if project_slug is None:
                listed += [
                    KeyListing(k.id, "(admin)", k.redacted, k.name, k.created_at, k.revoked_at)
                    for k in repository.admin_keys(session)
                ]
            return listed

    def set_key_limits(
        self, key_id: str, *, requests_per_minute: int | None, tokens_per_minute: int | None
    ) -> None:
        """Per-key rate limits (0 clears one, back to the deployment's default)."""
        with self._db.write() as session:
            row = repository.key_by_id(session, key_id)
            if row is None:
                raise NotFoundError(f"No such API key: {key_id}", param="key_id")
            if requests_per_minute is not None:
                row.requests_per_minute = requests_per_minute or None
            if tokens_per_minute is not None:
                row.tokens_per_minute = tokens_per_minute or None
        self._changes.announce()

    def set_project_limits(
        self, project_slug: str, *, max_active_jobs: int | None, storage_quota_bytes: int | None
    ) -> None:
        """Per-project caps (-1 clears one, back to the deployment's default)."""
        with self._db.write() as session:
            project = repository.project_by_slug(session, project_slug)
            if project is None:
                raise NotFoundError(f"No such project: {project_slug}", param="project")
            if max_active_jobs is not None:
                project.max_active_jobs = None if max_active_jobs < 0 else max_active_jobs
            if storage_quota_bytes is not None:
                project.storage_quota_bytes = (
                    None if storage_quota_bytes < 0 else storage_quota_bytes
                )
        self._changes.announce()

    def revoke_key(self, key_id: str) -> None:
        """Revoke a project key or an admin key; it fails on its next request."""
        with self._db.write() as session:
            row: ApiKey | AdminKey | None = repository.key_by_id(session, key_id)
            if row is None:
                row = repository.admin_key_by_id(session, key_id)
            if row is None:
                raise NotFoundError(f"No such API key: {key_id}", param="key_id")
            if row.revoked_at is None:
                row.revoked_at = int(time.time())
        self._changes.announce()

    def authenticate_admin(self, authorization: str | None) -> Admin:
        """Check a bearer admin key; a project key gets OpenAI's insufficient-permissions 401."""
        key = _bearer_token(authorization)
        with self._db.read() as session:
            admin = repository.active_admin_key(session, hash_api_key(key))
            project_key = admin is None and repository.active_key_with_project(
                session, hash_api_key(key)
            )
        if admin is not None:
            return Admin(admin.id)
        if project_key:
            raise AuthenticationError(INSUFFICIENT_PERMISSIONS)
        raise AuthenticationError(
            f"Incorrect API key provided: {mask_api_key(key)}. An operator can create an admin "
            "key with `openft keys create --admin`.",
            code="invalid_api_key",
        )

    def remembered(self, authorization: str | None, project_header: str | None) -> Principal | None:
        """The caller, when its key was checked good by this process and nothing about keys
        changed since (no query: for the event loop); None means ask ``authenticate``."""
        token = _bearer_token(authorization)
        principal = self._cache.get(hash_api_key(token))
        if principal is not None:
            _check_project_header(principal, project_header)
        return principal

    def authenticate(self, authorization: str | None, project_header: str | None) -> Principal:
        """Check a bearer key (and the optional ``OpenAI-Project`` header) against the database;
        a good key is remembered (``remembered``)."""
        key = _bearer_token(authorization)
        key_hash = hash_api_key(key)
        stamp = self._cache.stamp()  # before the query: a change after it voids the entry
        with self._db.read() as session:
            found = repository.active_key_with_project(session, key_hash)
        if found is None:
            raise AuthenticationError(
                f"Incorrect API key provided: {mask_api_key(key)}. An operator can list keys with "
                "`openft keys list` and create one with `openft keys create --project <slug>`.",
                code="invalid_api_key",
            )
        api_key, project = found
        principal = Principal(
            project.id,
            project.slug,
            api_key.id,
            requests_per_minute=api_key.requests_per_minute,
            tokens_per_minute=api_key.tokens_per_minute,
            max_active_jobs=project.max_active_jobs,
            storage_quota_bytes=project.storage_quota_bytes,
        )
        self._cache.put(key_hash, principal, stamp)
        _check_project_header(principal, project_header)
        return principal


def _check_project_header(principal: Principal, project_header: str | None) -> None:
    if project_header and project_header not in (principal.project_id, principal.project_slug):
        raise AuthenticationError(
            "OpenAI-Project header should match project for API key",
            code="mismatched_project",
        )


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError(NO_KEY_MESSAGE)
    return token
