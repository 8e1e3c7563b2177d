"""Routing over a base model's vLLM replicas (``inference.upstreams``): each model stays on one
replica (rendezvous hashing), models spread over the replicas, a replica that is down is skipped,
and a replica over its bounded load spills to the model's next choice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from inference.upstreams import Upstream, Upstreams, _addresses
from inference.vllm_client import VLLMClient, requests_in_server
from service.settings import Settings

URLS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]


def replicas(tmp_path: Path, urls: list[str] = URLS) -> Upstreams:
    settings = Settings(data_dir=tmp_path, vllm_urls={"tiny-chat": urls})
    upstreams = Upstreams(settings, VLLMClient(httpx.AsyncClient()), spawn=False)
    for upstream in upstreams.replicas("tiny-chat"):
        upstream.ready = True
    return upstreams


def chosen(upstreams: Upstreams, model: str) -> Upstream:
    picked = upstreams.pick("tiny-chat", model)
    assert picked is not None
    return picked


def test_a_model_stays_on_one_replica_and_models_spread(tmp_path: Path) -> None:
    upstreams = replicas(tmp_path)
    models = [f"ft:tiny-chat:acme::{i:08d}" for i in range(300)]
    first = {m: chosen(upstreams, m).base_url for m in models}
    assert all(chosen(upstreams, m).base_url == first[m] for m in models)  # stable
    spread = Counter(first.values())
    assert set(spread) == set(URLS) and min(spread.values()) > 60  # each ~100 of 300
    again = replicas(tmp_path)  # another API process ranks them the same way
    assert all(chosen(again, m).base_url == first[m] for m in models)


def test_a_replica_that_is_down_moves_only_its_own_models(tmp_path: Path) -> None:
    upstreams = replicas(tmp_path)
    models = [f"ft:tiny-chat:acme::{i:08d}" for i in range(300)]
    before = {m: chosen(upstreams, m).base_url for m in models}
    down = upstreams.replicas("tiny-chat")[0]
    down.ready = False
    after = {m: chosen(upstreams, m).base_url for m in models}
    assert down.base_url not in after.values()
    assert all(after[m] == before[m] for m in models if before[m] != down.base_url)


def test_a_hot_model_spills_to_its_second_choice_under_bounded_load(tmp_path: Path) -> None:
    upstreams = replicas(tmp_path, URLS[:2])
    home = chosen(upstreams, "ft:hot")
    other = next(u for u in upstreams.replicas("tiny-chat") if u is not home)
    home.in_flight = 3  # bound: ceil(1.25 * 4 / 2) = 3, so home is full
    assert chosen(upstreams, "ft:hot") is other
    home.in_flight = 1  # bound: ceil(1.25 * 2 / 2) = 2
    assert chosen(upstreams, "ft:hot") is home


def test_with_no_replica_ready_the_first_says_why_and_unknown_models_get_none(
    tmp_path: Path,
) -> None:
    upstreams = replicas(tmp_path)
    for upstream in upstreams.replicas("tiny-chat"):
        upstream.ready = False
    assert chosen(upstreams, "ft:x").base_url == URLS[0]
    assert upstreams.pick("no-such-base", "ft:x") is None
    status = upstreams.status()["tiny-chat"]
    assert not status.ready and status.replicas == tuple((u, False) for u in URLS)


def test_one_url_is_still_accepted_as_a_string(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vllm_urls={"tiny-chat": URLS[0]})
    assert settings.vllm_replicas("tiny-chat") == [URLS[0]]
    assert settings.vllm_replicas("other") == []


def test_a_headless_service_name_is_one_replica_per_address_it_resolves_to(
    tmp_path: Path,
) -> None:
    answers = [["127.0.0.1"], ["127.0.0.1", "127.0.0.2"], ["127.0.0.2"], [], ["127.0.0.3"]]
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        if len(asked) > len(answers):
            raise OSError("no such name")  # a resolver hiccup keeps the replicas it knew
        return answers[len(asked) - 1]

    name = "dns+http://vllm-pods:9"  # port 9 (discard): nothing answers, nothing hangs
    settings = Settings(data_dir=tmp_path, vllm_urls={"tiny-chat": [name, "http://fixed:1"]})
    upstreams = Upstreams(settings, VLLMClient(httpx.AsyncClient()), spawn=False, resolve=resolve)

    def urls() -> list[str]:
        return sorted(u.base_url for u in upstreams.replicas("tiny-chat"))

    async def follow() -> list[list[str]]:
        # Before the name resolves it holds its replicas' place: known, not ready (a 503).
        seen = [urls()]
        holder = upstreams.pick("tiny-chat", "tiny-chat")
        assert holder is not None and not holder.ready
        for _ in range(len(answers) + 1):
            await upstreams.resolve_names()
            seen.append(urls())
        await upstreams.stop()
        return seen

    seen = asyncio.run(follow())

    assert asked[0] == ("vllm-pods", 9)
    assert seen == [
        [name, "http://fixed:1"],
        ["http://127.0.0.1:9", "http://fixed:1"],
        ["http://127.0.0.1:9", "http://127.0.0.2:9", "http://fixed:1"],
        ["http://127.0.0.2:9", "http://fixed:1"],
        [name, "http://fixed:1"],  # every pod gone: the name holds the place again
        ["http://127.0.0.3:9", "http://fixed:1"],
        ["http://127.0.0.3:9", "http://fixed:1"],  # could not resolve: kept
    ]


def test_the_system_resolver_answers_every_address_of_a_name() -> None:
    assert "127.0.0.1" in asyncio.run(_addresses("localhost", 80))


EXPOSITION = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-chat"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny-chat"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-chat"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 2.0
vllm:num_requests_kv_fetch_by_stage{stage="x"} 9.0
"""


def test_a_replicas_queue_is_read_from_its_own_gauges() -> None:
    assert requests_in_server(EXPOSITION) == 6  # running on both engines + waiting, no others
    assert requests_in_server("# nothing here\nother_metric 4.0\n") is None


def test_other_processes_requests_count_toward_a_replicas_bounded_load(tmp_path: Path) -> None:
    """What the replica reports beyond this process's own requests is the others' load: a
    replica busy with another API process's requests spills this one's hot model."""
    upstreams = replicas(tmp_path, URLS[:2])
    home = chosen(upstreams, "ft:hot")
    other = next(u for u in upstreams.replicas("tiny-chat") if u is not home)
    depth = {home.base_url: 5, other.base_url: 0}

    def vllm(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tiny-chat"}]})
        running = f'vllm:num_requests_running{{engine="0"}} {depth[base]}.0\n'
        return httpx.Response(200, text=running)

    upstreams.vllm = VLLMClient(httpx.AsyncClient(transport=httpx.MockTransport(vllm)))
    home.in_flight = 1  # one of the five is this process's

    async def look() -> None:
        for upstream in upstreams.replicas("tiny-chat"):
            await upstreams._look(upstream)

    asyncio.run(look())
    assert (home.others_in_flight, other.others_in_flight) == (4, 0)
    assert chosen(upstreams, "ft:hot") is other  # load 5 of 6: over ceil(1.25 * 6 / 2) = 4
    depth[home.base_url] = 1  # the others' requests finished
    asyncio.run(look())
    assert home.others_in_flight == 0 and chosen(upstreams, "ft:hot") is home
