"""JSON log lines carry the ids of the request or job they are about."""

from __future__ import annotations

import contextvars
import json
import logging
import threading

from service.logs import JsonFormatter, add_log_ids, log_context


def render(message: str) -> dict[str, object]:
    record = logging.LogRecord("openft.test", logging.INFO, __file__, 1, message, (), None)
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


def test_lines_carry_the_ids_of_their_block_and_only_inside_it() -> None:
    with log_context(request_id="req_1"):
        # Added from another thread with a copy of the context, as sync dependencies run.
        copied = contextvars.copy_context()
        worker = threading.Thread(target=lambda: copied.run(add_log_ids, project_id="proj_1"))
        worker.start()
        worker.join()
        with log_context(job_id="ftjob-1"):
            inner = render("inside")
        outer = render("outside the job")
    after = render("after the request")

    assert inner["request_id"] == "req_1" and inner["project_id"] == "proj_1"
    assert inner["job_id"] == "ftjob-1" and inner["message"] == "inside"
    assert "job_id" not in outer and outer["project_id"] == "proj_1"
    assert {"time", "level", "logger", "message"} == set(after)
    add_log_ids(project_id="nowhere")  # outside any block: nothing to add to, nothing breaks
    assert "project_id" not in render("still nothing")


def test_the_jobs_own_errors_pass_through_a_log_context_unchanged() -> None:
    from trainer.dataset import DatasetError  # the worker raises it inside log_context

    raised = DatasetError("invalid_n_examples", "Training file has 3 example(s)")
    try:
        with log_context(job_id="ftjob-1"):
            raise raised
    except DatasetError as caught:
        assert caught is raised and caught.code == "invalid_n_examples"
