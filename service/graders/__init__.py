"""OpenAI's grader endpoints (``/v1/fine_tuning/alpha/graders``) over the ``graders`` package."""
