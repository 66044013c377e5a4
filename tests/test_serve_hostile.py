"""The server probed as an attacker would, on loopback: requests that poison the engine,
bodies and headers outside the protocol, half-open and slow connections, floods of huge
prompts, and a property-based fuzz of the server's own OpenAPI schema. Every refusal is
a 4xx in OpenAI's error shape naming the field; nothing disables the server, pins an
adapter's slot or blocks the event loop."""

from __future__ import annotations

import asyncio
import copy
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.engine import Engine, Event, Failed, Finished  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.sampling import Sampling  # noqa: E402
from fmlang.backends.serve.server import BackgroundServer, serve_in_background  # noqa: E402
from fmlang.cli.serve_cmd import _allowing  # noqa: E402
from tests.test_serve_server import serving  # noqa: E402

ADAPTERS = ("a0", "a1", "a2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    base = build_tiny_causal_lm(root / "base", seed=21)
    return base, build_random_adapters(base, root / "adapters", [4, 2, 8], seed=22)


def _config(tiny: tuple[Path, dict[str, Path]], **extra: Any) -> ServeConfig:
    base, adapters = tiny
    values = {"base_model": str(base), "adapters": {k: str(v) for k, v in adapters.items()}}
    return ServeConfig.model_validate({**values, **extra})


@pytest.fixture
def server(request: pytest.FixtureRequest, tiny: tuple[Path, dict[str, Path]]) -> Iterator[Any]:
    """A real uvicorn server on loopback with the test's extra settings (indirect)."""
    config = _config(tiny, **getattr(request, "param", {}))
    running = serve_in_background(config, build_engine(config))
    try:
        yield running
    finally:
        running.stop()


# ---- the engine: a poisoned request fails alone ---------------------------------------


def _answers(engine: Engine, requests: list[tuple[str | None, list[int], Sampling]]) -> list[Event]:
    """Submit every request at once; each one's last event (fails if one never answers)."""
    results: dict[int, Event] = {}
    done = threading.Semaphore(0)
    for index, (adapter, prompt, sampling) in enumerate(requests):

        def sink(event: Event, index: int = index) -> None:
            if not hasattr(event, "token_id"):
                results[index] = event
                done.release()

        engine.submit_generate(adapter, prompt, sampling, sink)
    for _ in requests:
        assert done.acquire(timeout=20), "a request never answered"
    return [results[index] for index in range(len(requests))]


def test_poisoned_requests_fail_alone_and_release_their_slots(
    tiny: tuple[Path, dict[str, Path]],
) -> None:
    """Seeds torch cannot take (on two adapters, with two device slots: before, they pinned
    both slots for good), a temperature whose softmax is NaN and a token id past the
    embedding table, co-batched with plain requests on every adapter: only the poisoned
    ones fail, the others answer as if alone, and no slot stays pinned."""
    engine = build_engine(_config(tiny, max_batch=8, cache={"device_slots": 2, "host_slots": 4}))
    engine.start()
    try:
        good = [(name, [5 + i, 40, 77], Sampling(6)) for i, name in enumerate([*ADAPTERS, None])]
        alone = [_answers(engine, [request])[0] for request in good]
        poisoned = [
            ("a0", [9, 9], Sampling(4, temperature=1.0, seed=2**64)),
            ("a1", [9, 9], Sampling(4, temperature=1.0, seed=2**64)),
            (None, [9, 9], Sampling(4, temperature=1e-300)),
            ("a2", [9, 5000], Sampling(4)),  # the tiny model's vocabulary has 1000 rows
        ]
        mixed = _answers(engine, [*poisoned, *good])
        after = _answers(engine, good)
    finally:
        engine.stop()
    assert all(isinstance(event, Failed) for event in mixed[: len(poisoned)]), mixed
    for solo, together, again in zip(alone, mixed[len(poisoned) :], after, strict=True):
        assert isinstance(solo, Finished) and isinstance(together, Finished), together
        assert isinstance(again, Finished)
        assert together.token_ids == solo.token_ids == again.token_ids
    assert all(engine.cache.pinned(name) == 0 for name in ADAPTERS)
    assert engine.running() == 0 and engine.queue_depth() == 0


@pytest.mark.parametrize("server", [{"cache": {"device_slots": 2}, "request_timeout_s": 5}],
                         indirect=True)  # fmt: skip
def test_poisoned_http_requests_leave_every_adapter_answering(server: BackgroundServer) -> None:
    """The seed that used to escape the engine's guard: refused with 400 naming `seed`,
    while every adapter keeps answering and no device slot stays pinned."""

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            body = {"prompt": "hi", "max_tokens": 3}
            poison = [{**body, "model": m, "seed": 2**64} for m in ("a0", "a1")]
            plain = [{**body, "model": m, "temperature": 0} for m in [*ADAPTERS, "base"]]
            posts = [client.post("/v1/completions", json=b) for b in [*poison, *plain, *plain]]
            return await asyncio.gather(*posts)

    answers = asyncio.run(scenario())
    for refused in answers[:2]:
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
    assert [a.status_code for a in answers[2:]] == [200] * 8
    engine = server.server.config.app.state.serve.engine
    assert all(engine.cache.pinned(name) == 0 for name in ADAPTERS)


# ---- the protocol: every field bounded, every refusal a 400 naming it ---------------


BAD_FIELDS: list[tuple[str, bytes | dict[str, Any], str]] = [
    ("seed", {"seed": 2**64}, "seed"),
    ("negative seed", {"seed": -(2**63) - 1}, "seed"),
    ("tiny temperature", {"temperature": 1e-300}, "temperature"),
    ("NaN temperature", b'{"model": "base", "prompt": "x", "temperature": NaN}', "temperature"),
    ("hot temperature", {"temperature": 2.5}, "temperature"),
    ("top_p 0", {"top_p": 0}, "top_p"),
    ("top_p above 1", {"top_p": 1.5}, "top_p"),
    ("max_tokens 0", {"max_tokens": 0}, "max_tokens"),
    ("boolean max_tokens", {"max_tokens": True}, "max_tokens"),
    ("more choices than max_choices", {"n": 17}, "n"),
    ("more stop strings than max_stop", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("empty stop string", {"stop": ""}, "stop"),
    ("penalty beyond 2", {"presence_penalty": 2.5}, "presence_penalty"),
    ("logit_bias key not a token id", {"logit_bias": {"x": 1}}, "logit_bias.x"),
    ("unknown field", {"max_tokenz": 3}, "max_tokenz"),
    ("unsupported OpenAI field", {"tools": []}, "tools"),
    ("string stream", {"stream": "yes"}, "stream"),
    ("boolean token id", {"prompt": [True, False]}, "prompt.0"),
    ("negative token id", {"prompt": [3, -1]}, "prompt.1"),
    ("token id past the vocabulary", {"prompt": [3, 259]}, "prompt"),
    ("lone surrogate", b'{"model": "base", "prompt": "a\\ud800b"}', "prompt"),
    ("surrogate model name", b'{"model": "\\udfff", "prompt": "x"}', "model"),
    ("deep JSON", b'{"model": "base", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ""),
]


def test_every_sampling_field_is_bounded(tiny: tuple[Path, dict[str, Path]]) -> None:
    config = _config(tiny, max_new_tokens=2, max_input_bytes=100)

    async def scenario() -> None:
        async with serving(config) as client:
            for name, change, param in BAD_FIELDS:
                if isinstance(change, bytes):
                    answer = await client.post("/v1/completions", content=change, headers=JSON)
                else:
                    body = {"model": "base", "prompt": "x", **change}
                    answer = await client.post("/v1/completions", json=body)
                assert answer.status_code == 400, (name, answer.text)
                error = answer.json()["error"]
                assert set(error) == {"message", "type", "code", "param"}
                assert error["param"] == (param or None), (name, error)
            chat = {"model": "a0", "messages": [{"role": "user", "content": "\ud800"}]}
            answer = await client.post("/v1/chat/completions", content=_raw(chat), headers=JSON)
            assert answer.json()["error"]["param"] == "messages.0.content"
            # measured in UTF-8 bytes before tokenizing: 51 characters, 102 bytes
            for path, body in (
                ("/v1/completions", {"model": "base", "prompt": "é" * 51}),
                ("/v1/chat/completions", {"model": "a0", "messages": [chat["messages"][0]
                                          | {"content": "é" * 51}]}),
            ):  # fmt: skip
                error = (await client.post(path, json=body)).json()["error"]
                assert "max_input_bytes" in error["message"], error
                assert error["param"] == ("prompt" if "prompt" in body else "messages")
            # bounds that are legal run: the nucleus always keeps the top token
            for legal in ({"top_p": 1e-300}, {"seed": 2**63 - 1}, {"seed": -1}):
                body = {"model": "a1", "prompt": "x", **legal}
                answer = await client.post("/v1/completions", json=body)
                assert answer.status_code == 200, (legal, answer.text)

    asyncio.run(scenario())


JSON = {"content-type": "application/json"}


def _raw(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()  # ensure_ascii keeps a lone surrogate as \ud800


def test_json_only_and_host_checked_on_loopback(tiny: tuple[Path, dict[str, Path]]) -> None:
    """A browser can post `text/plain` cross-origin without a preflight, and a rebound DNS
    name reaches a loopback server: both are refused."""
    body = b'{"model": "base", "prompt": "x", "max_tokens": 1}'

    async def scenario() -> None:
        loopback = _allowing(_config(tiny), ("Proxy.Internal",))  # fmc serve --allow-host
        async with serving(loopback) as client:

            async def post(headers: dict[str, str]) -> httpx.Response:
                return await client.post("/v1/completions", content=body, headers=headers)

            for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
                refused = await post({"content-type": content_type})
                assert refused.status_code == 415, content_type
                assert refused.json()["error"]["param"] == "Content-Type"
            assert (await post({"content-type": "application/json; charset=utf-8"})).is_success
            for host in ("evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil"):
                refused = await post({**JSON, "host": host})
                assert refused.status_code == 400, host
                error = refused.json()["error"]
                assert (error["code"], error["param"]) == ("invalid_host", "Host")
            for host in ("localhost:8080", "127.0.0.1", "[::1]:9", "proxy.internal:443"):
                assert (await post({**JSON, "host": host})).status_code == 200, host
        async with serving(_config(tiny, host="0.0.0.0")) as client:  # its own network policy
            answer = await client.post(
                "/v1/completions", content=body, headers={**JSON, "host": "10.0.0.7:8080"}
            )
            assert answer.status_code == 200

    asyncio.run(scenario())


# ---- connections: idle sockets, slow headers and bodies -----------------------------


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset), without waiting."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _port(server: BackgroundServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _open_idle(server: BackgroundServer, count: int) -> list[socket.socket]:
    """`count` connections: half send nothing, half a request head that never ends."""
    sockets = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", _port(server)))
        if index % 2:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


@pytest.mark.parametrize("server", [{"max_connections": 16, "header_timeout_s": 1.5,
                                     "body_timeout_s": 1.0}], indirect=True)  # fmt: skip
def test_idle_connections_cannot_lock_out_clients(server: BackgroundServer) -> None:
    """300 half-open connections against a limit of 16: all but the newest idle ones are
    closed at once, /health answers at once, the rest close at the header deadline (which
    trickled bytes do not reset), and a body that stops arriving gets 408."""
    sockets = _open_idle(server, 300)
    start = time.monotonic()
    health = httpx.get(f"{server.url}/health", timeout=5)
    assert health.status_code == 200 and time.monotonic() - start < 1.0
    time.sleep(0.2)
    assert sum(not _closed(sock) for sock in sockets) <= 16
    trickle = socket.create_connection(("127.0.0.1", _port(server)))
    trickle.sendall(b"GET /health HTTP/1.1\r\n")
    trickle.setblocking(False)
    for _ in range(5):  # one byte of header every 0.5 s: still closed at the deadline
        time.sleep(0.5)
        if _closed(trickle):
            break
        try:
            trickle.send(b"X")
        except OSError:  # closed between the check and the send
            break
    assert _closed(trickle) and time.monotonic() - start < 4.0
    assert all(_closed(sock) for sock in sockets)
    stalled = socket.create_connection(("127.0.0.1", _port(server)))
    stalled.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
        b"\r\nContent-Length: 100\r\n\r\n" + b'{"model": '
    )
    stalled.settimeout(5)
    reply = b"".join(iter(lambda: stalled.recv(4096), b""))  # until the server closes
    assert reply.startswith(b"HTTP/1.1 408") and b'"code":"body_timeout"' in reply
    for sock in [*sockets, trickle, stalled]:
        sock.close()


def test_health_stays_fast_while_huge_prompts_arrive(tiny: tuple[Path, dict[str, Path]]) -> None:
    """Four clients send 950 kB prompts without pause: each is refused by its byte length
    before any tokenizing, so /health keeps answering in milliseconds (it took seconds
    when each prompt was tokenized on the event loop)."""
    config = _config(tiny, max_input_tokens=64)
    running = serve_in_background(config, build_engine(config))
    try:
        latencies, statuses = asyncio.run(_flood(running.url, seconds=3.0))
    finally:
        running.stop()
    assert statistics.median(latencies) < 0.2 and max(latencies) < 0.6, latencies
    assert set(statuses) == {400} and len(statuses) >= 8


async def _flood(url: str, seconds: float) -> tuple[list[float], list[int]]:
    stop = time.monotonic() + seconds
    statuses: list[int] = []
    body = {"model": "base", "prompt": "a" * 950_000, "max_tokens": 1}

    async def flood() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while time.monotonic() < stop:
                statuses.append((await client.post("/v1/completions", json=body)).status_code)

    async def probe() -> list[float]:
        latencies = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await asyncio.sleep(0.3)  # the flood is under way
            while time.monotonic() < stop:
                begin = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - begin)
                await asyncio.sleep(0.05)
        return latencies

    latencies, *_ = await asyncio.gather(probe(), *[flood() for _ in range(4)])
    return latencies, statuses


# ---- the fuzz: the server's own OpenAPI schema, positive and negative bodies ---------

FUZZ_EXAMPLES = 80  # a few seconds on two cores
POSTS = ("/v1/completions", "/v1/chat/completions", "/v1/classify")


@pytest.mark.parametrize("server", [{"max_new_tokens": 4, "max_new_tokens_limit": 8,
                                     "max_input_tokens": 64}], indirect=True)  # fmt: skip
def test_fuzzed_requests_from_the_servers_own_schema_get_no_5xx(server: BackgroundServer) -> None:
    """Schemathesis generates requests from GET /openapi.json (bodies that fit it, bodies
    that break it, and fitting bodies within the served models and limits, which reach the
    engine):
    every request gets a response, none a 5xx, every 4xx in OpenAI's error shape."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    for path in POSTS:
        assert "requestBody" in document["paths"][path]["post"], path
    models = ["base", *ADAPTERS]
    strategy = st.one_of(
        schemathesis.openapi.from_dict(document).as_strategy(GenerationMode.NEGATIVE),
        schemathesis.openapi.from_dict(document).as_strategy(GenerationMode.POSITIVE),
        schemathesis.openapi.from_dict(_serving(document, models, 8)).as_strategy(),
    )
    statuses: Counter[int] = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=server.url, timeout=30)
        statuses[response.status_code] += 1
        report = f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:400]}"
        assert response.status_code < 500, report
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "code", "param"}, report

    fuzz()
    assert statuses[200] > 0 and sum(statuses[s] for s in statuses if s >= 400) > 0, statuses


def _serving(document: dict[str, Any], models: list[str], max_tokens: int) -> dict[str, Any]:
    """The schema with each body's `model` narrowed to the served names and its token
    counts to the server's limit, so that most bodies reach the engine."""
    narrowed = copy.deepcopy(document)
    for schema in narrowed["components"]["schemas"].values():
        fields = schema.get("properties", {})
        if "model" in fields:
            fields["model"] = {"type": "string", "enum": models}
        for name in ("max_tokens", "max_completion_tokens"):
            if name in fields:
                fields[name] = {"type": "integer", "minimum": 1, "maximum": max_tokens}
    return narrowed
