"""A job's training and validation files, checked in one streaming pass each and tokenized."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from graders.config import Grader, item_problem, parse_grader
from service.queue import Claim
from service.settings import BaseModelConfig
from trainer.artifacts import JobArtifacts
from trainer.dataset import PreparedFile, item_of, prepare_file
from trainer.placement import load_tokenizer


@dataclass(frozen=True)
class JobFiles:
    training: PreparedFile
    validation: PreparedFile | None


def prepare_job_files(claim: Claim, base: BaseModelConfig, artifacts: JobArtifacts) -> JobFiles:
    """Check the job's files (a problem fails the job: ``DatasetError``) and tokenize them for
    the base model."""
    method = claim.method["type"]
    tokenizer = load_tokenizer(base)
    item_check = None
    if method == "reinforcement":
        item_check = partial(_item_problem, parse_grader(claim.method["reinforcement"]["grader"]))
    training = prepare_file(
        artifacts.input_file(claim.training_file, "training"),
        tokenizer,
        file_id=claim.training_file,
        method=method,
        max_length=base.max_seq_length,
        item_check=item_check,
    )
    validation = None
    if claim.validation_file is not None:
        validation = prepare_file(
            artifacts.input_file(claim.validation_file, "validation"),
            tokenizer,
            file_id=claim.validation_file,
            method=method,
            max_length=base.max_seq_length,
            param="validation_file",
            item_check=item_check,
        )
    return JobFiles(training, validation)


def _item_problem(grader: Grader, example: dict[str, Any]) -> str | None:
    return item_problem(grader, item_of(example))
