"""A bounded load test against a real uvicorn server on a loopback port: a few hundred
requests from concurrent clients, mixed adapters, streamed and not, some malformed. No
crash, no lost request, every valid answer equals the single-request answer (greedy) and
every invalid one is a clean JSON error."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.server import serve_in_background  # noqa: E402

JSON = {"content-type": "application/json"}  # malformed bodies still say they are JSON
REQUESTS = 300
CLIENTS = 24
MODELS = ["base", "a0", "a1", "a2", "a3"]


def _distinct(rng: random.Random) -> list[dict[str, Any]]:
    words = ["spam", "ham", "check", "out", "my", "channel", "great", "song", "subscribe"]
    bodies = []
    for index in range(30):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        bodies.append(
            {
                "model": MODELS[index % len(MODELS)],
                "prompt": prompt,
                "max_tokens": rng.randint(1, 10),
                "temperature": 0,
            }
        )
    return bodies


def _mix(rng: random.Random, valid: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(kind, body) per request: valid ones (some streamed) and four kinds of bad ones."""
    work: list[tuple[str, Any]] = []
    for _ in range(REQUESTS):
        roll = rng.random()
        if roll < 0.08:
            work.append(("malformed", b'{"model": "a0", "prompt": '))
        elif roll < 0.13:
            work.append(("unknown", {"model": "nope", "prompt": "x"}))
        elif roll < 0.18:
            work.append(("too_long", {"model": "a1", "prompt": "y" * 300}))
        elif roll < 0.21:
            work.append(("missing", {"model": "a2"}))
        else:
            index = rng.randrange(len(valid))
            work.append(("stream" if roll > 0.85 else "valid", index))
    return work


EXPECTED_STATUS = {"malformed": 400, "unknown": 404, "too_long": 400, "missing": 400}


async def _one(client: httpx.AsyncClient, kind: str, body: Any, valid: list[Any]) -> Any:
    if kind == "malformed":
        response = await client.post("/v1/completions", content=body, headers=JSON)
    elif kind in ("valid", "stream"):
        payload = {**valid[body], "stream": kind == "stream"}
        response = await client.post("/v1/completions", json=payload)
    else:
        response = await client.post("/v1/completions", json=body)
    if kind == "stream" and response.status_code == 200:
        chunks = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert chunks[-1] == "[DONE]"
        return 200, "".join(json.loads(c)["choices"][0]["text"] for c in chunks[:-1])
    data = response.json()
    if response.status_code == 200:
        return 200, data["choices"][0]["text"]
    assert set(data["error"]) == {"message", "type", "code", "param"}
    return response.status_code, data["error"]["message"]


async def _drive(url: str, work: list[tuple[str, Any]], valid: list[Any]) -> list[Any]:
    limits = httpx.Limits(max_connections=CLIENTS)
    gate = asyncio.Semaphore(CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        references = [await _one(client, "valid", i, valid) for i in range(len(valid))]

        async def guarded(kind: str, body: Any) -> Any:
            async with gate:
                return await _one(client, kind, body, valid)

        answers = await asyncio.gather(*[guarded(kind, body) for kind, body in work])
        metrics = (await client.get("/metrics")).text
        health = (await client.get("/health")).status_code
    return [references, answers, metrics, health]


def test_load(tmp_path: Path) -> None:
    base = build_tiny_causal_lm(tmp_path / "base", seed=11)
    adapters = build_random_adapters(base, tmp_path / "adapters", [4, 2, 8, 16], seed=12)
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=8,
        max_queue=256,
        max_input_tokens=200,
        cache={"device_slots": 2, "host_slots": 2},  # fewer slots than adapters: evictions
    )
    rng = random.Random(13)
    valid = _distinct(rng)
    work = _mix(rng, valid)
    server = serve_in_background(config)
    try:
        references, answers, metrics, health = asyncio.run(_drive(server.url, work, valid))
    finally:
        server.stop()
    assert health == 200 and len(answers) == len(work)  # nothing lost, still alive
    failed = [(status, text[:200]) for status, text in references if status != 200]
    assert not failed, failed
    for (kind, body), (status, text) in zip(work, answers, strict=True):
        if kind in ("valid", "stream"):
            assert (status, text) == references[body], (kind, valid[body])
        else:
            assert status == EXPECTED_STATUS[kind], (kind, status, text)
    served = sum(kind in ("valid", "stream") for kind, _ in work) + len(valid)
    line = f'fmc_requests_total{{endpoint="completions",status="200"}} {float(served)}'
    assert line in metrics
    assert 'fmc_adapter_cache_evictions_total{tier="device"}' in metrics


# ---- the benchmark's side-by-side comparison, on a small trace ------------------------


def _benchmark() -> Any:
    """benchmarks/serve_load.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_http_answers_equal_the_engines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One trace (completions and chats, streamed or not, adapters, some bad requests for
    HTTP only) through the engine alone and through the real server: every HTTP answer is
    the engine's answer for the same request, nothing is lost, bad ones get their 4xx."""
    import os

    bench = _benchmark()
    base = build_tiny_causal_lm(tmp_path / "base", seed=21)
    adapters = build_random_adapters(base, tmp_path / "adapters", [4, 8, 2], seed=22)
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=8,
        max_queue=64,
        max_input_tokens=256,
        max_new_tokens_limit=32,
        max_new_tokens=16,
        cache={"device_slots": 2, "host_slots": 2},  # fewer slots than adapters
    )
    rng = random.Random(23)
    bodies = bench.distinct_bodies(["base", *adapters], rng, 12)
    work = bench.plan(rng, 80, len(bodies), 0.1)
    assert any(item.bad for item in work) and any(item.stream for item in work)
    answers, seconds, _ = bench.engine_alone(config, bodies, work, 6)
    assert seconds > 0 and all(status == 200 for status, _ in answers)
    server = serve_in_background(config)
    try:
        outcome = asyncio.run(bench.drive(server.url, bodies, work, 6, os.getpid()))
    finally:
        server.stop()
    assert bench.report(outcome, work, answers, seconds, 1.0)
    printed = capsys.readouterr().out
    assert "lost 0 (transport errors 0), wrong 0" in printed
    assert "HTTP / engine:" in printed and "server RSS:" in printed
    # The comparison can fail: an answer that differs from the engine's is counted.
    first = next(i for i, item in enumerate(work) if item.bad is None)
    answers[sum(1 for item in work[:first] if item.bad is None)] = (200, "something else")
    assert not bench.report(outcome, work, answers, seconds, 1.0)
