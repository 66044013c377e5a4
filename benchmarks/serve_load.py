"""Load on the real server: uvicorn on a loopback port, many concurrent httpx clients.

The server runs in its own process (`run(load_config(...))`, as `fmc serve` does), the
clients in this one. The tiny causal LM (stdlib `tiny_causal_lm` shape, random weights)
with `--adapters` random LoRA adapters; `--requests` requests from `--clients` concurrent
clients: completions and chat completions, some streamed, adapters with power-law
popularity, and a share of bad requests (malformed JSON, unknown adapter, prompt over the
token limit, missing field). Valid requests are greedy, so each answer must equal the single-request
answer for the same body (measured first, one at a time); the script checks that, that every
request got an answer (none lost), that bad ones got their 4xx JSON error, and that the
server still answers /health afterwards. It prints counts by status, the checks, p50/p95
latency of valid requests, the throughput, and the server's own batch-size histogram.

    .venv/bin/python benchmarks/serve_load.py [--requests 3000] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from transformers.utils import logging as hf_logging

from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm

JSON = {"content-type": "application/json"}  # malformed bodies still say they are JSON
SERVER = (
    "import sys; from pathlib import Path; from fmlang.backends.serve.config import load_config; "
    "from fmlang.backends.serve.server import run; import torch; "
    "torch.set_num_threads(int(sys.argv[2])); run(load_config(Path(sys.argv[1])))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: ServeConfig, folder: Path, threads: int) -> subprocess.Popen[bytes]:
    """`fmc serve`'s run() in its own process (its own GIL), ready when /ready says so."""
    path = folder / "server.json"
    path.write_text(config.model_dump_json(), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(path), str(threads)])
    url = f"http://{config.host}:{config.port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not become ready")


BAD = {
    "malformed": (b'{"model": "a0", "prompt": ', 400),
    "unknown": ({"model": "nope", "prompt": "x"}, 404),
    "too_long": ({"model": "a1", "prompt": "y" * 600}, 400),
    "missing": ({"model": "a2"}, 400),
}


def distinct_bodies(models: list[str], rng: random.Random, count: int) -> list[dict[str, Any]]:
    words = ["spam", "ham", "check", "out", "my", "channel", "great", "song", "subscribe", "now"]
    weights = [1.0 / (k + 1) for k in range(len(models))]
    bodies = []
    for index in range(count):
        model = rng.choices(models, weights)[0]
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        common = {"model": model, "max_tokens": rng.randint(4, 24), "temperature": 0}
        if index % 3 == 0:
            bodies.append({**common, "messages": [{"role": "user", "content": text}]})
        else:
            bodies.append({**common, "prompt": text})
    return bodies


def plan(rng: random.Random, requests: int, bodies: int, bad_share: float) -> list[Any]:
    work: list[Any] = []
    for _ in range(requests):
        if rng.random() < bad_share:
            work.append(rng.choice(list(BAD)))
        else:
            work.append((rng.randrange(bodies), rng.random() < 0.3))
    return work


async def send(client: httpx.AsyncClient, body: Any, stream: bool) -> tuple[int, str]:
    if isinstance(body, bytes):
        response = await client.post("/v1/completions", content=body, headers=JSON)
    else:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        response = await client.post(path, json={**body, "stream": stream})
    if response.status_code != 200:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}
        return response.status_code, error["message"]
    if stream:
        lines = [x[6:] for x in response.text.split("\n\n") if x.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(line)["choices"][0] for line in lines[:-1]]
        return 200, "".join(c.get("text") or c.get("delta", {}).get("content", "") for c in chunks)
    choice = response.json()["choices"][0]
    return 200, choice.get("text", choice.get("message", {}).get("content"))


async def drive(url: str, bodies: list[Any], work: list[Any], clients: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        reference = [await send(client, body, False) for body in bodies]
        gate = asyncio.Semaphore(clients)

        async def one(item: Any) -> tuple[Any, int, str, float]:
            async with gate:
                start = time.perf_counter()
                if isinstance(item, str):
                    status, text = await send(client, BAD[item][0], False)
                else:
                    status, text = await send(client, bodies[item[0]], item[1])
                return item, status, text, time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*[one(item) for item in work], return_exceptions=True)
        elapsed = time.perf_counter() - start
        health = (await client.get("/health")).status_code
        metrics = (await client.get("/metrics")).text
    return {"reference": reference, "results": results, "elapsed": elapsed, "health": health,
            "metrics": metrics}  # fmt: skip


def report(outcome: dict[str, Any], work: list[Any]) -> None:
    results, reference = outcome["results"], outcome["reference"]
    crashed = [r for r in results if isinstance(r, BaseException)]
    finished = [r for r in results if not isinstance(r, BaseException)]
    statuses = collections.Counter(status for _, status, _, _ in finished)
    wrong = 0
    for item, status, text, _ in finished:
        if isinstance(item, str):
            wrong += status != BAD[item][1]
        else:
            wrong += (status, text) != reference[item[0]]
    valid = sorted(s for item, status, _, s in finished if not isinstance(item, str))
    print("responses by status:", dict(sorted(statuses.items())))
    print(
        f"sent {len(work)}, answered {len(finished)}, transport errors {len(crashed)}, "
        f"wrong answers {wrong}, /health afterwards {outcome['health']}"
    )
    print(
        f"valid requests: p50 {statistics.median(valid) * 1000:.0f} ms, "
        f"p95 {valid[int(0.95 * (len(valid) - 1))] * 1000:.0f} ms; "
        f"{len(work) / outcome['elapsed']:.1f} requests/s over {outcome['elapsed']:.1f} s"
    )
    figures = dict(
        line.rsplit(" ", 1)
        for line in outcome["metrics"].splitlines()
        if line.startswith(("fmc_batch_rows_sum", "fmc_batch_rows_count"))
    )
    steps, rows = float(figures["fmc_batch_rows_count"]), float(figures["fmc_batch_rows_sum"])
    print(f"server: {steps:.0f} forward passes, {rows / steps:.1f} rows per pass on average")
    if crashed or wrong or outcome["health"] != 200:
        raise SystemExit("FAILED: lost, crashed or wrong answers")
    print("OK: no crash, no lost request, every answer correct or a clean error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=16)
    parser.add_argument("--bad", type=float, default=0.1, help="share of bad requests")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_causal_lm(Path(tmp) / "base")
        ranks = [(4, 8, 16)[i % 3] for i in range(args.adapters)]
        folders = build_random_adapters(base, Path(tmp) / "adapters", ranks)
        config = ServeConfig(
            base_model=str(base),
            adapters={name: str(path) for name, path in folders.items()},
            port=free_port(),
            max_batch=args.max_batch,
            max_queue=4 * args.clients,
            max_input_tokens=256,
            max_new_tokens_limit=32,
            max_new_tokens=16,
            cache={"device_slots": 8, "host_slots": 16},
        )
        bodies = distinct_bodies(["base", *folders], rng, 60)
        work = plan(rng, args.requests, len(bodies), args.bad)
        print(
            f"{args.requests} requests, {args.clients} clients, {args.adapters} adapters "
            f"(8 device slots), max_batch {args.max_batch}, {args.bad:.0%} bad requests"
        )
        server = start_server(config, Path(tmp), args.threads)
        try:
            url = f"http://{config.host}:{config.port}"
            outcome = asyncio.run(drive(url, bodies, work, args.clients))
        finally:
            server.terminate()
            server.wait(timeout=60)
    report(outcome, work)


if __name__ == "__main__":
    main()
