"""Lists at scale on PostgreSQL: 100,000 jobs and 100,000 files in one project, `limit=20`.

Measured in this process through the services the API calls (`FilesService`, `JobsService`):
list at page 1 and at page 1,000 (the cursor of the 20,000th object), and retrieve by id; the
baseline is a bare primary-key SELECT through the same driver (psycopg) on one connection.
Bars: p99 at page 1,000 <= 1.2x p99 at page 1; list and retrieve p99 <= 3x the bare SELECT.
Run: `.venv/bin/python bench/lists.py [--objects 100000] [--samples 2000]`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from postgres import scratch_database
from results import percentile, print_table, write_result
from sqlalchemy import insert

from service.auth.principal import Principal
from service.auth.service import AccessService
from service.blobstore import LocalBlobStore
from service.db import migrate
from service.db.database import Database
from service.db.models import File, FineTuningJob
from service.files.service import FilesService
from service.jobs.service import JobsService
from service.settings import Settings

BATCH = 5000


def seed(db: Database, project_id: str, objects: int) -> tuple[list[str], list[str]]:
    """``objects`` files and jobs, oldest first; returns their ids in creation order."""
    now = int(time.time())
    file_ids = [f"file-bench{i:012d}" for i in range(objects)]
    job_ids = [f"ftjob-bench{i:012d}" for i in range(objects)]
    with db.write() as session:
        for start in range(0, objects, BATCH):
            session.execute(
                insert(File),
                [
                    {
                        "id": file_ids[i], "project_id": project_id, "purpose": "fine-tune",
                        "filename": f"train-{i}.jsonl", "bytes": 1000 + i,
                        "created_at": now - objects + i, "expires_at": None,
                        "status": "processed",
                    }
                    for i in range(start, min(objects, start + BATCH))
                ],
            )  # fmt: skip
            session.execute(
                insert(FineTuningJob),
                [
                    {
                        "id": job_ids[i], "project_id": project_id, "model": "tiny-chat",
                        "training_file": file_ids[i], "validation_file": None, "suffix": None,
                        "seed": i, "method": {"type": "supervised", "supervised": {
                            "hyperparameters": {"n_epochs": 3, "batch_size": 1,
                                                "learning_rate_multiplier": 2.0}}},
                        "job_metadata": None, "integrations": [], "status": "succeeded",
                        "error": None, "fine_tuned_model": None, "result_files": [],
                        "trained_tokens": 1000, "created_at": now - objects + i,
                        "finished_at": now, "attempt": 1, "cancel_requested": False,
                        "lost_leases": 0,
                    }
                    for i in range(start, min(objects, start + BATCH))
                ],
            )  # fmt: skip
    return file_ids, job_ids


def timed(work: Callable[[], Any], samples: int) -> list[float]:
    found = []
    for _ in range(samples):
        started = time.perf_counter()
        work()
        found.append(time.perf_counter() - started)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    with scratch_database("lists") as (url, dsn):
        run(url, dsn, args.objects, args.samples)


def run(url: str, dsn: str, objects: int, samples: int) -> None:
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"openft-bench-lists-{os.getpid()}"
    settings = Settings(data_dir=data, database_url=url)
    db = Database(url)
    migrate.upgrade(db)
    issued = AccessService(db).issue_key("bench")
    principal = Principal(issued.project_id, issued.project_slug, issued.key_id)
    started = time.perf_counter()
    file_ids, job_ids = seed(db, principal.project_id, objects)
    print(f"seeded {objects:,} files and {objects:,} jobs in {time.perf_counter() - started:.0f}s")
    files = FilesService(db, LocalBlobStore(data / "blobs"), settings)
    jobs = JobsService(db, settings)
    deep = 1000 * 20  # the cursor that starts page 1,000 (newest first)
    file_cursor, job_cursor = file_ids[-deep], job_ids[-deep]
    middle_file, middle_job = file_ids[objects // 2], job_ids[objects // 2]

    with psycopg.connect(dsn) as bare:
        bare.execute("ANALYZE")  # as autovacuum soon would: without statistics, plans are blind
        bare.commit()
        work: dict[str, Callable[[], Any]] = {
            "bare PK SELECT (files)": lambda: bare.execute(
                "SELECT * FROM files WHERE id = %s", (middle_file,)
            ).fetchone(),
            "files: list page 1": lambda: files.list(
                principal, purpose=None, limit=20, order="desc", after=None
            ),
            "files: list page 1,000": lambda: files.list(
                principal, purpose=None, limit=20, order="desc", after=file_cursor
            ),
            "files: retrieve": lambda: files.retrieve(principal, middle_file),
            "jobs: list page 1": lambda: jobs.list(principal, after=None, limit=20, metadata={}),
            "jobs: list page 1,000": lambda: jobs.list(
                principal, after=job_cursor, limit=20, metadata={}
            ),
            "jobs: retrieve": lambda: jobs.retrieve(principal, middle_job),
        }
        for call in work.values():  # warm caches and the connection pool
            timed(call, 50)
        seen: dict[str, list[float]] = {label: [] for label in work}
        for _ in range(4):  # interleaved, so every call sees the same machine
            for label, call in work.items():
                seen[label] += timed(call, samples // 4)
    db.dispose()
    p99 = {label: percentile(found, 0.99) for label, found in seen.items()}
    bare_p99 = p99["bare PK SELECT (files)"]
    rows = [
        (label, f"{value * 1e3:.3f}", f"{value / bare_p99:.2f}x") for label, value in p99.items()
    ]
    print_table(("call", "p99 ms", "vs bare SELECT"), rows)
    deep_files = p99["files: list page 1,000"] / p99["files: list page 1"]
    deep_jobs = p99["jobs: list page 1,000"] / p99["jobs: list page 1"]
    print(f"page 1,000 vs page 1: files {deep_files:.2f}x, jobs {deep_jobs:.2f}x (bar <= 1.2x)")
    worst = max(value for label, value in p99.items() if not label.startswith("bare"))
    print(f"worst list/retrieve p99 vs bare SELECT: {worst / bare_p99:.2f}x (bar <= 3x)")
    write_result(
        "lists",
        {
            "objects": objects,
            "p99_ms": {label: round(value * 1e3, 4) for label, value in p99.items()},
            "deep_page_ratio": {"files": round(deep_files, 3), "jobs": round(deep_jobs, 3)},
            "worst_vs_bare_select": round(worst / bare_p99, 3),
        },
    )


if __name__ == "__main__":
    main()
