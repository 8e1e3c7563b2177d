"""The Responses API through the official SDK, on ``ft:`` models trained here and served by vLLM:
plain, chained with ``previous_response_id``, streamed, a function-tool round trip, a strict JSON
schema; stored per project; every body and stream event checked against OpenAI's spec.

Runs on the training server of ``test_fine_tune_end_to_end.py`` (the same session fixtures).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from service.auth.service import AccessService
from service.db.database import Database
from tests.e2e.test_fine_tune_end_to_end import (
    QUESTION,
    TERMINAL,
    WEATHER,
    fact_lines,
    samples,
    scrape_when,
    tool_call_lines,
    wait_for,
)
from tests.support import openai_spec
from tests.support.server import ServerProcess

FLAT_WEATHER = {"type": "function", "strict": False, **WEATHER}


def trained(client: openai.OpenAI, lines: bytes) -> str:
    training = client.files.create(file=("train.jsonl", lines), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-chat", training_file=training.id)
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded" and done.fine_tuned_model, done.error
    return done.fine_tuned_model


@pytest.fixture(scope="module")
def models(training_server: ServerProcess) -> Iterator[dict[str, str]]:
    """A model that learnt the lighthouse's password, and one that learnt to call get_weather."""
    key = training_server.bootstrap_key()
    assert key is not None
    with openai.OpenAI(base_url=training_server.api_url, api_key=key, max_retries=0) as client:
        yield {"fact": trained(client, fact_lines()), "tools": trained(client, tool_call_lines())}


@pytest.fixture
def other_project(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI]
) -> openai.OpenAI:
    database = Database(f"sqlite:///{training_server.env['OPENFT_DATA_DIR']}/openft.db")
    key = AccessService(database).issue_key("responses-other").key
    database.dispose()
    return sdk(training_server.api_url, key)


def test_a_response_from_a_fine_tuned_model_is_stored_and_chained(
    trainer_client: openai.OpenAI, models: dict[str, str], other_project: openai.OpenAI
) -> None:
    client, model = trainer_client, models["fact"]

    first = client.responses.create(
        model=model, input=QUESTION, max_output_tokens=20, temperature=0, metadata={"run": "1"}
    )

    assert first.id.startswith("resp_") and len(first.id) == 55
    assert first.object == "response" and first.status == "completed" and first.model == model
    assert "marmalade-47" in first.output_text
    (message,) = first.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert first.usage is not None and first.usage.input_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.metadata == {"run": "1"} and first.store is True
    assert client.responses.retrieve(first.id).output_text == first.output_text

    second = client.responses.create(
        model=model, input="And again?", previous_response_id=first.id, max_output_tokens=20
    )

    assert second.previous_response_id == first.id  # random weights: it may run to the limit
    assert second.status in ("completed", "incomplete")
    chain = client.responses.input_items.list(second.id)  # newest first, as OpenAI lists it
    assert [item.type for item in chain.data] == ["message", "message", "message"]
    assert [getattr(item, "role", None) for item in chain.data] == ["user", "assistant", "user"]
    assert chain.data[1].id == message.id  # the previous output, replayed from the database
    assert chain.data[2].content[0].text == QUESTION  # type: ignore[union-attr]
    page = client.responses.input_items.list(second.id, limit=1, order="asc")
    assert [i.id for i in page.data] == [chain.data[2].id] and page.has_more
    after = client.responses.input_items.list(second.id, after=page.data[0].id, order="asc")
    assert [i.id for i in after.data] == [chain.data[1].id, chain.data[0].id]

    with pytest.raises(openai.NotFoundError) as missing:
        other_project.responses.retrieve(first.id)
    assert missing.value.body["message"] == f"Response with id '{first.id}' not found."  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as foreign:
        other_project.responses.create(model="tiny-chat", input="x", previous_response_id=first.id)
    assert foreign.value.code == "previous_response_not_found"
    assert foreign.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other_project.responses.delete(first.id)

    deleted = client.responses.delete(first.id)
    assert deleted is None  # the SDK returns nothing; the route answers response.deleted
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    unstored = client.responses.create(model="tiny-chat", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_input_tokens_are_counted_as_the_response_will_use_them(
    trainer_client: openai.OpenAI, models: dict[str, str]
) -> None:
    client, model = trainer_client, models["fact"]
    first = client.responses.create(
        model=model, input=QUESTION, max_output_tokens=20, temperature=0
    )
    asked = {"model": model, "input": "Say it again.", "instructions": "Be brief.",
             "previous_response_id": first.id}  # fmt: skip

    counted = client.responses.input_tokens.count(**asked)  # type: ignore[arg-type]
    answered = client.responses.create(**asked, max_output_tokens=16)  # type: ignore[arg-type]

    assert counted.object == "response.input_tokens"
    assert answered.usage is not None and counted.input_tokens == answered.usage.input_tokens
    with_tools = client.responses.input_tokens.count(**asked, tools=[FLAT_WEATHER])  # type: ignore[arg-type]
    assert with_tools.input_tokens > counted.input_tokens  # the tools are in the prompt


def test_a_streamed_response_has_openais_events_in_order(
    trainer_client: openai.OpenAI, models: dict[str, str]
) -> None:
    client, model = trainer_client, models["fact"]

    with client.responses.stream(
        model=model, input=QUESTION, max_output_tokens=20, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 0
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed" if final.status == "completed" else "response.incomplete",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "marmalade-47" in final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0
    assert client.responses.retrieve(final.id).output_text == final.output_text

    wire = raw_events(client, model=model, input=QUESTION, max_output_tokens=20, temperature=0)
    assert [event["type"] for event in wire] == kinds  # greedy: the same sequence
    for event in wire:
        problems = openai_spec.stream_event_problems(event)
        assert not problems, problems


def raw_events(client: openai.OpenAI, **body: Any) -> list[dict[str, Any]]:
    """A streamed response's events as sent: ``event:``/``data:`` pairs, no ``[DONE]``."""
    with client.responses.with_streaming_response.create(stream=True, **body) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        lines = [line for line in response.iter_lines() if line]
    assert "[DONE]" not in "".join(lines)
    kinds, data = lines[0::2], lines[1::2]
    events = [json.loads(line.removeprefix("data: ")) for line in data]
    assert kinds == [f"event: {event['type']}" for event in events]
    return events


def test_a_function_tool_round_trip(trainer_client: openai.OpenAI, models: dict[str, str]) -> None:
    client, model = trainer_client, models["tools"]

    called = client.responses.create(
        model=model,
        input="What is the weather in Paris?",
        tools=[FLAT_WEATHER],  # type: ignore[list-item]
        max_output_tokens=60,
        temperature=0,
    )

    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1, called.output
    (call,) = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("fc_") and call.call_id

    answered = client.responses.create(
        model=model,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21C"}],
        tools=[FLAT_WEATHER],  # type: ignore[list-item]
        max_output_tokens=20,
    )

    assert answered.status in ("completed", "incomplete") and answered.output
    kinds = [item.type for item in client.responses.input_items.list(answered.id).data]
    assert kinds == ["function_call_output", "function_call", "message"]


def test_a_strict_tool_is_served_not_refused(trainer_client: openai.OpenAI) -> None:
    """Strict tools (the Responses API's default, the Agents SDK's too) with tool_choice auto:
    vLLM compiles them as structural tags, which its guidance backend refused ("Invalid grammar
    specification: 'triggers'"), so OpenFT runs vLLM's xgrammar backend."""
    strict = {**WEATHER, "type": "function", "strict": True}
    strict["parameters"] = {**WEATHER["parameters"], "required": ["city"],
                            "additionalProperties": False}  # fmt: skip

    answered = trainer_client.responses.create(
        model="tiny-chat", input="What is the weather in Paris?", tools=[strict],  # type: ignore[list-item]
        max_output_tokens=16, temperature=0,
    )  # fmt: skip

    assert answered.status in ("completed", "incomplete") and answered.output


def test_a_streamed_function_call(trainer_client: openai.OpenAI, models: dict[str, str]) -> None:
    events = raw_events(
        trainer_client,
        model=models["tools"],
        input="What is the weather in Paris?",
        tools=[FLAT_WEATHER],
        max_output_tokens=60,
        temperature=0,
    )

    kinds = [event["type"] for event in events]
    assert "response.function_call_arguments.delta" in kinds
    done = kinds.index("response.function_call_arguments.done")
    assert events[done]["name"] == "get_weather"
    assert json.loads(events[done]["arguments"]) == {"city": "Paris"}
    assert kinds[-1] == "response.completed"
    for event in events:
        problems = openai_spec.stream_event_problems(event)
        assert not problems, problems


def test_a_strict_json_schema_shapes_the_answer(trainer_client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["verdict"],
        "additionalProperties": False,
    }

    answer = trainer_client.responses.create(
        model="tiny-chat",  # random weights: only the schema can make this JSON
        input="Is the sky green?",
        text={
            "format": {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}
        },
        max_output_tokens=60,
        temperature=0,
    )

    assert json.loads(answer.output_text)["verdict"] in ("yes", "no")
    assert answer.text.format.type == "json_schema"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"frobnicate": True}, "frobnicate"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0].type"),
    ],
)  # fmt: skip
def test_what_openft_cannot_honour_is_a_400_naming_the_param(
    training_server: ServerProcess, trainer_client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    answer = httpx.post(
        training_server.api_url + "/responses",
        headers={"authorization": f"Bearer {trainer_client.api_key}"},
        json={"model": "tiny-chat", "input": "hi", **body},
        timeout=30,
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_responses_usage_is_what_metrics_count(
    training_server: ServerProcess, sdk: Callable[..., openai.OpenAI], models: dict[str, str]
) -> None:
    # The fact model belongs to the bootstrap project; its counters are that project's.
    key = training_server.bootstrap_key()
    assert key is not None
    client = sdk(training_server.api_url, key)
    labels = {"model": models["fact"], "base_model": "tiny-chat", "project": "default"}
    before = scrape_when(training_server)
    prompt = samples(before, "openft_inference_prompt_tokens_total", **labels)
    completion = samples(before, "openft_inference_completion_tokens_total", **labels)
    requests = samples(before, "openft_inference_requests_total", **labels, status="ok")

    answer = client.responses.create(model=models["fact"], input=QUESTION, max_output_tokens=20)
    with client.responses.stream(model=models["fact"], input=QUESTION, max_output_tokens=20) as s:
        last = list(s)[-1]  # response.completed, or response.incomplete at the token limit
    assert last.type in ("response.completed", "response.incomplete")
    streamed = last.response

    assert answer.usage is not None and streamed.usage is not None
    seen_prompt = answer.usage.input_tokens + streamed.usage.input_tokens
    seen_completion = answer.usage.output_tokens + streamed.usage.output_tokens
    after = scrape_when(
        training_server,
        ("openft_inference_requests_total", {**labels, "status": "ok"}, requests + 2),
    )
    assert samples(after, "openft_inference_prompt_tokens_total", **labels) == prompt + seen_prompt
    assert (
        samples(after, "openft_inference_completion_tokens_total", **labels)
        == completion + seen_completion
    )
