"""The adapter source of OpenFT's vLLM resolver plugin (``inference.adapter_source``), over a real
SQLite database and blob folder: an ``ft:`` name becomes its adapter's folder in the replica's own
cache, pulled once however many first requests come together; checkpoints resolve to their step's
adapter; deleted models, unknown names and base models resolve to nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import update

from inference.adapter_source import AdapterSource
from service.auth.service import AccessService
from service.blobstore import open_blob_store, write_blob
from service.blobstore.keys import adapter_key
from service.db import migrate
from service.db.database import Database
from service.db.models import FineTuningJob, FineTuningJobCheckpoint
from service.settings import Settings

MODEL = "ft:tiny-chat:team::abcd1234"
CHECKPOINT = f"{MODEL}:ckpt-step-4"


def deployment(tmp_path: Path) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "api", database_url=f"sqlite:///{tmp_path / 'openft.db'}"
    )
    database = Database(settings.database_url)
    migrate.upgrade(database)
    project = AccessService(database).issue_key("team").project_id
    with database.write() as session:
        session.add(
            FineTuningJob(
                id="ftjob-r", project_id=project, model="tiny-chat", training_file="file-t",
                validation_file=None, suffix=None, seed=1, method={}, job_metadata=None,
                integrations=[], status="succeeded", error=None, fine_tuned_model=MODEL,
                result_files=[], created_at=int(time.time()), attempt=0, cancel_requested=False,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            FineTuningJobCheckpoint(
                id="ftckpt_r4", job_id="ftjob-r", project_id=project, created_at=0,
                name=CHECKPOINT, step=4, metrics={},
            )
        )  # fmt: skip
    database.dispose()
    blobs = open_blob_store(settings)
    blobs.prepare()
    for variant in ("final", "step-4"):
        write_blob(blobs, adapter_key("ftjob-r", "adapter_config.json", variant), [b"{}"])
        write_blob(
            blobs, adapter_key("ftjob-r", "adapter_model.safetensors", variant), [variant.encode()]
        )
    return settings


def test_a_replica_pulls_each_adapter_once_into_its_own_cache(tmp_path: Path) -> None:
    settings = deployment(tmp_path)
    replica = settings.model_copy(update={"data_dir": tmp_path / "replica"})
    source = AdapterSource(replica)

    async def first_requests() -> list[Path | None]:
        return await asyncio.gather(*(source.fetch(MODEL) for _ in range(8)))

    folders = asyncio.run(first_requests())

    assert len(set(folders)) == 1
    (folder,) = set(folders)
    assert folder is not None and folder.is_relative_to(tmp_path / "replica" / "adapter-cache")
    assert (folder / "adapter_model.safetensors").read_bytes() == b"final"
    assert len(list((tmp_path / "replica" / "adapter-cache" / "ftjob-r").iterdir())) == 1
    checkpoint = asyncio.run(source.fetch(CHECKPOINT))
    assert checkpoint is not None
    assert (checkpoint / "adapter_model.safetensors").read_bytes() == b"step-4"
    assert asyncio.run(source.fetch("ft:tiny-chat:team::nothing")) is None
    assert asyncio.run(source.fetch("tiny-chat")) is None

    with source.db.write() as session:
        session.execute(update(FineTuningJob).values(model_deleted_at=int(time.time())))
    assert asyncio.run(source.fetch(MODEL)) is None
    assert asyncio.run(source.fetch(CHECKPOINT)) is None
