"""The HTTP server through httpx's ASGI transport: every endpoint, streaming in OpenAI's
chunk format, metrics, and every error case with its status and JSON error body."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.fixtures import (  # noqa: E402
    build_random_adapters,
    build_tiny_causal_lm,
    byte_tokenizer,
)
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.server import create_app  # noqa: E402
from tests.test_serve_engine import _classifier_adapters, _greedy_reference, _reference  # noqa: E402

Client = httpx.AsyncClient


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("server")
    base = build_tiny_causal_lm(root / "base", seed=4)
    adapters = build_random_adapters(base, root / "adapters", [4, 8, 2], seed=5)
    shutil.copytree(adapters["a2"], root / "adapters" / "broken")
    adapters["broken"] = root / "adapters" / "broken"
    return base, adapters


def _config(tiny: tuple[Path, dict[str, Path]], **extra: Any) -> ServeConfig:
    base, adapters = tiny
    values = {"base_model": str(base), "adapters": {k: str(v) for k, v in adapters.items()}}
    return ServeConfig.model_validate({**values, **extra})


@asynccontextmanager
async def serving(config: ServeConfig, *, load: bool = True) -> AsyncIterator[Client]:
    """A client of the app, with the app's lifespan (engine start and stop) around it."""
    app = create_app(config, build_engine(config) if load else None)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://localhost")
    async with app.router.lifespan_context(app), client:
        yield client


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def _events(text: str) -> list[Any]:
    lines = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def test_info_endpoints(tiny: tuple[Path, dict[str, Path]]) -> None:
    async def scenario() -> None:
        async with serving(_config(tiny)) as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert (await client.get("/ready")).json() == {"status": "ready"}
            models = (await client.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == ["base", "a0", "a1", "a2", "broken"]
            assert models[1]["parent"] == "base"

    run(scenario)


def test_completion_equals_merged_model_and_stream_adds_up(
    tiny: tuple[Path, dict[str, Path]],
) -> None:
    base, adapters = tiny
    prompt = "Hello there"

    async def scenario() -> None:
        async with serving(_config(tiny)) as client:
            body = {"model": "a1", "prompt": prompt, "max_tokens": 12, "temperature": 0}
            plain = (await client.post("/v1/completions", json=body)).json()
            streamed = await client.post("/v1/completions", json={**body, "stream": True})
            metrics = (await client.get("/metrics")).text
        tokenizer = byte_tokenizer()
        ids = tokenizer(prompt)["input_ids"]
        expected = _greedy_reference(_reference(base, adapters["a1"]), ids, 12)
        assert plain["object"] == "text_completion"
        assert plain["usage"]["completion_tokens"] == len(expected)
        assert plain["usage"]["prompt_tokens"] == len(ids)
        text = tokenizer.decode(expected, skip_special_tokens=True)
        assert plain["choices"][0]["text"] == text
        assert streamed.headers["content-type"].startswith("text/event-stream")
        chunks = _events(streamed.text)
        assert all(c["object"] == "text_completion" for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks) == text
        assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
        for line in (
            'fmc_requests_total{endpoint="completions",status="200"} 2.0',
            'fmc_adapter_cache_hits_total{tier="device"} 1.0',
            'fmc_adapter_cache_misses_total{tier="device"} 1.0',
            "fmc_time_to_first_token_seconds_count 2.0",
            f"fmc_generated_tokens_total {2.0 * len(expected)}",
            "fmc_queue_depth 0.0",
        ):
            assert line in metrics
        assert "fmc_batch_rows_bucket" in metrics and "fmc_request_latency_seconds" in metrics

    run(scenario)


def test_chat_with_and_without_a_template(tiny: tuple[Path, dict[str, Path]]) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = {"model": "base", "messages": messages, "max_tokens": 6, "temperature": 0}

    async def scenario() -> None:
        config = _config(tiny)
        engine = build_engine(config)
        app = create_app(config, engine)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            Client(transport=transport, base_url="http://localhost") as client,
        ):
            plain = (await client.post("/v1/chat/completions", json=body)).json()
            stream = await client.post("/v1/chat/completions", json={**body, "stream": True})
            engine.tokenizer.chat_template = "{% for m in messages %}[{{ m.content }}]{% endfor %}>"
            templated = (await client.post("/v1/chat/completions", json=body)).json()
        assert plain["object"] == "chat.completion"
        assert plain["choices"][0]["message"]["role"] == "assistant"
        # the fallback template: "system: Be brief.\nuser: Hi\nassistant:" (38 bytes)
        assert plain["usage"]["prompt_tokens"] == len("system: Be brief.\nuser: Hi\nassistant:")
        assert templated["usage"]["prompt_tokens"] == len("[Be brief.][Hi]>")
        chunks = _events(stream.text)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert content == plain["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}

    run(scenario)


def test_request_errors(tiny: tuple[Path, dict[str, Path]]) -> None:
    config = _config(
        tiny, max_input_tokens=16, max_new_tokens=8, max_new_tokens_limit=32, max_body_bytes=2000
    )

    async def scenario() -> None:
        async with serving(config) as client:
            post = client.post
            bad_json = await post("/v1/completions", content=b"{nope", headers=_json())
            assert "not valid JSON" in _error(bad_json, 400)["message"]
            missing = await post("/v1/completions", json={"model": "base"})
            assert _error(missing, 400)["param"] == "prompt"
            not_object = await post("/v1/completions", json=[1, 2])
            _error(not_object, 400)
            unknown = await post("/v1/completions", json={"model": "zz", "prompt": "x"})
            error = _error(unknown, 404)
            assert error["code"] == "model_not_found" and "a0, a1, a2, broken" in error["message"]
            long = await post("/v1/completions", json={"model": "a0", "prompt": "x" * 17})
            error = _error(long, 400)
            assert "16" in error["message"] and error["param"] == "prompt"
            many = await post(
                "/v1/completions", json={"model": "a0", "prompt": "x", "max_tokens": 33}
            )
            error = _error(many, 400)
            assert "32" in error["message"] and error["param"] == "max_tokens"
            big = await post("/v1/completions", content=b"x" * 2001, headers=_json())
            assert _error(big, 413)["code"] == "body_too_large"
            chunked = await post("/v1/completions", content=_chunks(3000), headers=_json())
            _error(chunked, 413)
            empty = await post("/v1/chat/completions", json={"model": "a0", "messages": []})
            assert _error(empty, 400)["param"] == "messages"
            wrong = await post("/v1/classify", json={"model": "a0", "input": "x"})
            assert _error(wrong, 400)["code"] == "wrong_task"
            health = await client.get("/health")
            assert health.status_code == 200

    run(scenario)


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 100):
        yield b" " * 100


def test_one_broken_request_does_not_break_the_server(
    tiny: tuple[Path, dict[str, Path]],
) -> None:
    async def scenario() -> None:
        async with serving(_config(tiny)) as client:
            # damaged after startup: loading it on first use fails for this request only
            weights = tiny[1]["broken"] / "adapter_model.safetensors"
            intact = weights.read_bytes()
            weights.write_bytes(b"\0garbage")
            try:
                await _broken_then_fine(client)
            finally:
                weights.write_bytes(intact)

    run(scenario)


async def _broken_then_fine(client: Client) -> None:
    body = {"prompt": "abc", "max_tokens": 4, "temperature": 0}
    broken, fine = await asyncio.gather(
        client.post("/v1/completions", json={**body, "model": "broken"}),
        client.post("/v1/completions", json={**body, "model": "a0"}),
    )
    error = _error(broken, 500)
    assert error["type"] == "server_error" and "broken" in error["message"]
    assert fine.status_code == 200
    again = await client.post("/v1/completions", json={**body, "model": "a0"})
    assert again.json()["choices"][0]["text"] == fine.json()["choices"][0]["text"]
    metrics = (await client.get("/metrics")).text
    assert 'fmc_errors_total{code="500"} 1.0' in metrics
    assert 'fmc_adapter_cache_misses_total{tier="disk"} 1.0' in metrics


def test_full_queue_and_timeout(tiny: tuple[Path, dict[str, Path]]) -> None:
    async def scenario() -> None:
        config = _config(tiny, max_batch=1, max_queue=1, request_timeout_s=30)
        body = {"model": "a0", "prompt": "abc", "max_tokens": 150, "temperature": 0}
        async with serving(config) as client:
            answers = await asyncio.gather(
                *[client.post("/v1/completions", json=body) for _ in range(12)]
            )
        statuses = sorted(a.status_code for a in answers)
        # Twelve at once against one running row and one queued: some are answered and the
        # rest refused. How many are answered depends on whether the first is admitted to
        # the batch before the others reach the queue (prompts are tokenized on a thread).
        assert set(statuses) == {200, 429} and 1 <= statuses.count(200) < 12
        full = next(a for a in answers if a.status_code == 429)
        assert full.headers["retry-after"] == "1"
        assert _error(full, 429)["type"] == "rate_limit_exceeded"
        async with serving(_config(tiny, request_timeout_s=0.01)) as client:
            slow = await client.post("/v1/completions", json={**body, "max_tokens": 200})
            assert _error(slow, 504)["code"] == "timeout"
            slow_stream = await client.post(
                "/v1/completions", json={**body, "max_tokens": 200, "stream": True}
            )
            assert slow_stream.status_code == 200
            assert _events(slow_stream.text)[-1]["error"]["code"] == "timeout"

    run(scenario)


def test_not_ready_until_loaded(tiny: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    async def scenario() -> None:
        broken = ServeConfig(base_model=str(tmp_path / "no-model"))
        async with serving(broken, load=False) as client:
            for _ in range(200):  # the background load fails quickly
                ready = await client.get("/ready")
                if "FM1006" in ready.text or "cannot load" in ready.text:
                    break
                await asyncio.sleep(0.05)
            assert ready.status_code == 503 and "cannot load" in ready.json()["reason"]
            refused = await client.post("/v1/completions", json={"model": "base", "prompt": "x"})
            assert _error(refused, 503)["code"] == "not_ready"
            assert (await client.get("/health")).status_code == 200
        async with serving(_config(tiny), load=False) as client:
            for _ in range(400):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            answer = await client.post("/v1/completions", json={"model": "a1", "prompt": "x"})
            assert answer.status_code == 200

    run(scenario)


def test_classify_endpoint(tmp_path: Path) -> None:
    base, adapters = _classifier_adapters(tmp_path)
    config = ServeConfig(
        base_model=str(base),
        task="classify",
        classes=("ham", "spam", "eggs"),
        adapters={k: str(v) for k, v in adapters.items()},
        max_batch=4,
        max_input_tokens=40,
    )

    async def scenario() -> None:
        async with serving(config) as client:
            one = await client.post("/v1/classify", json={"model": "c1", "input": "buy now"})
            two = await client.post("/v1/classify", json={"model": "base", "input": ["a", "b"]})
            split = await client.post("/v1/classify", json={"model": "c0", "input": ["a", "b"] * 5})
            alone = await client.post("/v1/classify", json={"model": "c0", "input": "b"})
            too_many = await client.post("/v1/classify", json={"model": "c0", "input": ["a"] * 257})
            too_long = await client.post("/v1/classify", json={"model": "c0", "input": "x" * 41})
            generate = await client.post("/v1/completions", json={"model": "c0", "prompt": "x"})
        data = one.json()["data"]
        assert len(data) == 1 and set(data[0]["probabilities"]) == {"ham", "spam", "eggs"}
        probabilities = data[0]["probabilities"]
        assert abs(sum(probabilities.values()) - 1) < 1e-5
        assert data[0]["label"] == max(probabilities, key=probabilities.__getitem__)
        assert [row["index"] for row in two.json()["data"]] == [0, 1]
        # 10 inputs with max_batch 4: three batches, answers in order, each as if alone.
        rows = split.json()["data"]
        assert [row["index"] for row in rows] == list(range(10))
        solo = alone.json()["data"][0]["probabilities"]
        assert all(abs(rows[i]["probabilities"][k] - solo[k]) < 1e-5 for i in (1, 9) for k in solo)
        assert _error(too_many, 400)["param"] == "input"
        assert "40" in _error(too_long, 400)["message"]
        assert _error(generate, 400)["code"] == "wrong_task"

    run(scenario)
