"""The job queue under contention: 200 short jobs, 4 worker processes, PostgreSQL.

Each worker process runs the worker's own queue calls (`queue.claim` with `FOR UPDATE SKIP
LOCKED`, the move to `running`, the move to `succeeded` under its lease); the training in between
is left out, so the queue is all that is measured. Checked: every job ran exactly once (one claim,
one worker, `attempt` 1). Reported: claim latency under contention and in one process alone (the
statement's own cost), against the baseline of a bare one-row UPDATE transaction through the same
driver and pool, and jobs per second.
Run: `.venv/bin/python bench/queue_claims.py [--jobs 200] [--workers 4]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from typing import Any

from postgres import scratch_database
from results import percentile, print_table, write_result
from sqlalchemy import insert, select, text, update

from service import queue
from service.auth.service import AccessService
from service.db import migrate
from service.db.database import Database
from service.db.models import FineTuningJob


def work(url: str, name: str, results: Any) -> None:
    """One worker process: claim, run, finish, until the queue is empty."""
    db = Database(url)
    done, claim_s = [], []
    while True:
        started = time.perf_counter()
        claim = queue.claim(db, name, lease_s=60)
        claim_s.append(time.perf_counter() - started)
        if claim is None:
            break
        queue.advance(db, claim, "queued", "running", "Fine-tuning job started")
        with queue.held(db, claim, "running") as (_session, job):
            queue.transition(job, "succeeded")
            job.finished_at = int(time.time())
            job.lease_owner = None
        done.append(claim.job_id)
    db.dispose()
    results.put((name, done, claim_s[:-1]))  # the last claim found the queue empty


def bare_updates(db: Database, job_id: str, samples: int) -> list[float]:
    found = []
    for _ in range(samples):
        started = time.perf_counter()
        with db.write() as session:
            session.execute(
                update(FineTuningJob).where(FineTuningJob.id == job_id).values(lost_leases=0)
            )
        found.append(time.perf_counter() - started)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with scratch_database("queue") as (url, _dsn):
        run(url, args.jobs, args.workers)


def seed(db: Database, project: str, prefix: str, jobs: int) -> None:
    """``jobs`` queued jobs, ids ``ftjob-<prefix>NNNNNN``."""
    now = int(time.time())
    with db.write() as session:
        session.execute(
            insert(FineTuningJob),
            [
                {
                    "id": f"ftjob-{prefix}{i:06d}", "project_id": project, "model": "tiny-chat",
                    "training_file": "file-x", "seed": i,
                    "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
                    "integrations": [], "status": "queued", "result_files": [],
                    "created_at": now, "attempt": 0, "cancel_requested": False,
                    "lost_leases": 0,
                }
                for i in range(jobs)
            ],
        )  # fmt: skip
        session.execute(text("ANALYZE fine_tuning_jobs"))


def claims_alone(db: Database, project: str, jobs: int) -> list[float]:
    """Each claim's time with no other process about: the statement's own cost."""
    seed(db, project, "alone", jobs)
    found = []
    for _ in range(jobs):
        started = time.perf_counter()
        assert queue.claim(db, "alone", lease_s=60) is not None
        found.append(time.perf_counter() - started)
    return found


def run(url: str, jobs: int, workers: int) -> None:
    db = Database(url)
    migrate.upgrade(db)
    project = AccessService(db).issue_key("bench").project_id
    seed(db, project, "queue", jobs)
    baseline = bare_updates(db, "ftjob-queue000000", 200)

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    started = time.perf_counter()
    processes = [
        context.Process(target=work, args=(url, f"worker-{i}", results)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started

    ran = [job for _, done, _ in reports for job in done]
    with db.read() as session:
        rows = session.execute(select(FineTuningJob.status, FineTuningJob.attempt)).all()
    alone = claims_alone(db, project, jobs)
    db.dispose()
    exactly_once = len(ran) == len(set(ran)) == jobs and all(
        status == "succeeded" and attempt == 1 for status, attempt in rows
    )
    claims = [s for _, _, claim_s in reports for s in claim_s]
    rows_out = [
        ("bare one-row UPDATE (baseline)", f"{statistics.median(baseline) * 1e3:.2f}",
         f"{percentile(baseline, 0.99) * 1e3:.2f}", "1.00x"),
        ("queue.claim, one process alone", f"{statistics.median(alone) * 1e3:.2f}",
         f"{percentile(alone, 0.99) * 1e3:.2f}",
         f"{statistics.median(alone) / statistics.median(baseline):.2f}x"),
        (f"queue.claim, {workers} workers", f"{statistics.median(claims) * 1e3:.2f}",
         f"{percentile(claims, 0.99) * 1e3:.2f}",
         f"{statistics.median(claims) / statistics.median(baseline):.2f}x"),
    ]  # fmt: skip
    print(f"{jobs} jobs, {workers} worker processes, PostgreSQL: {jobs / elapsed:.0f} jobs/s")
    print(f"per worker: {', '.join(f'{n} {len(d)}' for n, d, _ in sorted(reports))}")
    print_table(("call", "median ms", "p99 ms", "median vs baseline"), rows_out)
    print(f"exactly once: {'yes' if exactly_once else 'NO'}")
    write_result(
        "queue_claims",
        {
            "jobs": jobs,
            "workers": workers,
            "jobs_per_second": round(jobs / elapsed, 1),
            "jobs_per_worker": {n: len(d) for n, d, _ in reports},
            "claim_ms": {"median": round(statistics.median(claims) * 1e3, 3),
                         "p99": round(percentile(claims, 0.99) * 1e3, 3)},
            "claim_alone_ms": {"median": round(statistics.median(alone) * 1e3, 3),
                               "p99": round(percentile(alone, 0.99) * 1e3, 3)},
            "baseline_update_ms": {"median": round(statistics.median(baseline) * 1e3, 3)},
            "exactly_once": exactly_once,
        },
    )  # fmt: skip
    if not exactly_once:
        raise SystemExit("a job ran more than once or not at all")


if __name__ == "__main__":
    main()
