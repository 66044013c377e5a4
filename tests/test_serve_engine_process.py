"""The engine in its own process (`remote.EngineProcess`, the default of `fmc serve`): the
same answers as the engine on a thread, cancellation and the queue bound across the
process boundary, load failures as diagnostics, a dead engine process reported, and no
process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.engine import Failed, Finished  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.remote import EngineProcess, start_engine  # noqa: E402
from fmlang.backends.serve.sampling import Sampling  # noqa: E402
from fmlang.backends.serve.server import BackgroundServer, serve_in_background  # noqa: E402
from fmlang.errors import StageError  # noqa: E402
from tests.test_serve_engine import _classifier_adapters  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ServeConfig:
    root = tmp_path_factory.mktemp("process")
    base = build_tiny_causal_lm(root / "base", seed=31)
    adapters = build_random_adapters(base, root / "adapters", [4, 8, 2], seed=32)
    return ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=4,
        max_new_tokens_limit=512,
        cache={"device_slots": 2, "host_slots": 2},  # fewer slots than adapters
    )


def _process(server: BackgroundServer) -> EngineProcess:
    engine = server.server.config.app.state.serve.engine
    assert isinstance(engine, EngineProcess)
    return engine


def _bodies() -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for index, model in enumerate(["base", "a0", "a1", "a2"] * 3):
        common = {"model": model, "max_tokens": 3 + index, "temperature": 0}
        if index % 3 == 0:
            bodies.append({**common, "messages": [{"role": "user", "content": f"hi {index}"}]})
        else:
            bodies.append({**common, "prompt": f"check out {index}", "stream": index % 2 == 0})
        if index == 5:
            bodies[-1].update(stop=["a", "e"], logprobs=2)
        if index == 7:
            bodies[-1].update(model="base", adapters={"a0": 0.5, "a1": 0.5})
    return bodies


def _comparable(value: Any) -> Any:
    """A response as data, without per-response ids and clocks."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("id", "created")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _same(one: Any, other: Any) -> bool:
    """Equal, floats within 1e-4 (rows batched differently differ in the last bits)."""
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(_same(one[k], other[k]) for k in one)
    if isinstance(one, list | tuple) and isinstance(other, list | tuple):
        return len(one) == len(other) and all(_same(a, b) for a, b in zip(one, other, strict=True))
    if isinstance(one, float) and isinstance(other, float):
        return abs(one - other) <= 1e-4
    return bool(one == other)


async def _answers(url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(body: dict[str, Any]) -> tuple[int, Any]:
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            response = await client.post(path, json=body)
            if not body.get("stream"):
                return response.status_code, _comparable(response.json())
            events = [e[6:] for e in response.text.split("\n\n") if e.startswith("data: ")]
            assert events[-1] == "[DONE]"
            return response.status_code, [_comparable(json.loads(e)) for e in events[:-1]]

        return list(await asyncio.gather(*[one(body) for body in bodies]))


def test_answers_equal_the_engine_on_a_thread(tiny: ServeConfig) -> None:
    """Completions, chats, streams, stop strings, logprobs and a mixture, concurrently:
    byte for byte the answers of the same server with its engine on a thread."""
    bodies = _bodies()
    answers = {}
    for engine_process in (True, False):
        config = tiny.model_copy(update={"engine_process": engine_process})
        server = serve_in_background(config)
        try:
            if engine_process:
                assert isinstance(_process(server), EngineProcess)
            answers[engine_process] = asyncio.run(_answers(server.url, bodies))
        finally:
            server.stop()
    assert all(status == 200 for status, _ in answers[True]), answers[True]
    assert _same(answers[True], answers[False]), (answers[True], answers[False])


def test_metrics_come_from_the_engine_process(tiny: ServeConfig) -> None:
    server = serve_in_background(tiny)
    try:
        asyncio.run(_answers(server.url, _bodies()[:6]))
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    counts = [line for line in metrics.splitlines() if line.startswith("fmc_batch_rows_count")]
    assert counts and float(counts[0].split()[-1]) > 0
    misses = [line for line in metrics.splitlines() if line.startswith("fmc_adapter_cache_misses")]
    assert any(float(line.split()[-1]) > 0 for line in misses), misses


def test_a_client_that_leaves_frees_its_row_in_the_engine_process(tiny: ServeConfig) -> None:
    """A streamed request whose client disconnects is cancelled across the pipe: its row
    leaves the child's batch before the 240 tokens it asked for were generated."""
    server = serve_in_background(tiny)
    engine = _process(server)
    body = {"model": "a0", "prompt": "go", "max_tokens": 240, "stream": True}
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_bytes())  # the first chunk arrived: it is running
            assert engine.running() == 1
        deadline = time.monotonic() + 10
        while engine.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running() == 0 and engine.queue_depth() == 0
        assert engine.tokens_generated < 240  # cancelled, not finished
    finally:
        server.stop()


def test_the_queue_bound_answers_429_at_submission(tiny: ServeConfig) -> None:
    config = tiny.model_copy(update={"max_batch": 1, "max_queue": 2})
    server = serve_in_background(config)
    bodies = [{"model": "base", "prompt": "x", "max_tokens": 200, "temperature": 0}] * 12

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return list(
                await asyncio.gather(*[client.post("/v1/completions", json=b) for b in bodies])
            )

    try:
        responses = asyncio.run(flood())
    finally:
        server.stop()
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses and set(statuses) == {200, 429}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"


def test_a_model_that_cannot_load_is_the_same_diagnostic(tmp_path: Path) -> None:
    config = ServeConfig(base_model=str(tmp_path / "absent"))
    with pytest.raises(StageError) as caught:
        start_engine(config)
    assert [d.code for d in caught.value.diagnostics] == ["FM1006"]


def test_a_dead_engine_process_fails_requests_and_health(tiny: ServeConfig) -> None:
    """The engine process killed mid-request: the request fails with a clear message, new
    requests get 503 `engine_down`, and /health answers 503 so an orchestrator restarts."""
    server = serve_in_background(tiny)
    engine = _process(server)
    body = {"model": "base", "prompt": "x", "max_tokens": 240, "stream": True}
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body) as response:
            assert response.status_code == 200
            chunks = response.iter_text()
            next(chunks)
            assert engine.process.pid is not None
            os.kill(engine.process.pid, signal.SIGKILL)
            rest = "".join(chunks)
        assert "exited unexpectedly" in rest and rest.endswith("data: [DONE]\n\n")
        after = httpx.post(f"{server.url}/v1/completions", json={"model": "base", "prompt": "x"})
        assert after.status_code == 503 and after.json()["error"]["code"] == "engine_down"
        assert httpx.get(f"{server.url}/health").status_code == 503
    finally:
        server.stop()


def test_stopping_answers_everything_and_leaves_no_process(tiny: ServeConfig) -> None:
    """`stop` with requests queued: each gets its last event (Finished or Failed), none
    is left waiting, and the child process has exited."""
    engine = start_engine(tiny)
    assert isinstance(engine, EngineProcess)
    engine.start()
    finals: list[Any] = []
    for _ in range(10):
        engine.submit_generate(None, [1, 2, 3], Sampling(max_new_tokens=300), finals.append)
    time.sleep(0.2)
    engine.stop()
    done = [event for event in finals if isinstance(event, Finished | Failed)]
    assert len(done) == 10
    assert any(isinstance(e, Failed) and "shutting down" in e.message for e in done)
    assert not engine.process.is_alive()


def test_classification_in_the_engine_process(tmp_path: Path) -> None:
    base, adapters = _classifier_adapters(tmp_path)
    config = ServeConfig(
        base_model=str(base),
        task="classify",
        classes=("ham", "spam", "eggs"),
        adapters={k: str(v) for k, v in adapters.items()},
        max_batch=4,
    )
    rows = {}
    for engine_process in (True, False):
        server = serve_in_background(config.model_copy(update={"engine_process": engine_process}))
        try:
            body = {"model": "c1", "input": ["buy now", "hello", "x"] * 3}
            answer = httpx.post(f"{server.url}/v1/classify", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            rows[engine_process] = answer.json()["data"]
        finally:
            server.stop()
    for one, other in zip(rows[True], rows[False], strict=True):
        assert one["label"] == other["label"]
        for name, value in one["probabilities"].items():
            assert abs(value - other["probabilities"][name]) < 1e-6


def test_a_killed_server_takes_its_engine_process_with_it(
    tiny: ServeConfig, tmp_path: Path
) -> None:
    """`fmc serve`'s process killed outright (no shutdown): its engine process sees the
    pipe close and exits instead of living on as an orphan holding the model."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "server.json"
    path.write_text(tiny.model_copy(update={"port": port}).model_dump_json(), encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from fmlang.backends.serve.config import "
        "load_config; from fmlang.backends.serve.server import run; "
        "run(load_config(Path(sys.argv[1])))"
    )
    server = subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert children, "the server has no engine process"
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [c for c in children if Path(f"/proc/{c}").exists()]
    assert not alive, f"left behind: {alive}"
