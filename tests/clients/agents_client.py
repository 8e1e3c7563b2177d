"""The OpenAI Agents SDK against OpenFT (run by tests/e2e/test_third_party_clients.py, with the
Python of .venv-clients): its default model API (``OpenAIResponsesModel``), tracing off, a plain
run on the fact model and a function-tool round trip on the tool model. Prints one JSON object.
Run: ``.venv-clients/bin/python tests/clients/agents_client.py FACT_MODEL TOOL_MODEL`` with
``OPENFT_BASE_URL`` and ``OPENFT_API_KEY`` set.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from agents import (
    Agent,
    FunctionTool,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

QUESTION = "What is the secret password of the lighthouse?"
WEATHER_QUESTION = "What is the weather in Paris?"


def main() -> None:
    fact_model, tool_model = sys.argv[1:3]
    set_tracing_disabled(True)  # or it sends traces, with this key, to api.openai.com
    client = AsyncOpenAI(
        base_url=os.environ["OPENFT_BASE_URL"], api_key=os.environ["OPENFT_API_KEY"]
    )
    settings = ModelSettings(temperature=0, max_tokens=24)
    keeper = Agent(
        name="keeper",
        instructions="You are the lighthouse keeper.",
        model=OpenAIResponsesModel(model=fact_model, openai_client=client),
        model_settings=settings,
    )
    answered = Runner.run_sync(keeper, QUESTION)

    cities: list[str] = []

    async def get_weather(_context: Any, arguments: str) -> str:
        city = json.loads(arguments)["city"]
        cities.append(city)
        return f"Sunny in {city}."

    # The tool as the model was trained to call it (a tiny model knows only that rendering);
    # not strict, as it was trained.
    weather = FunctionTool(
        name="get_weather",
        description="Weather in a city",
        params_json_schema={"type": "object", "properties": {"city": {"type": "string"}}},
        on_invoke_tool=get_weather,
        strict_json_schema=False,
    )
    forecaster = Agent(
        name="forecaster",
        model=OpenAIResponsesModel(model=tool_model, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=96),  # a call's envelope too
        tools=[weather],
        tool_use_behavior="stop_on_first_tool",
    )
    forecast = Runner.run_sync(forecaster, WEATHER_QUESTION)
    print(
        json.dumps(
            {
                "answer": answered.final_output,
                "response_ids": [r.response_id for r in answered.raw_responses],
                "tool_calls": cities,
                "tool_output": forecast.final_output,
            }
        )
    )


if __name__ == "__main__":
    main()
