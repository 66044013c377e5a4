"""One trace, twice: the engine alone, then the real server through HTTP, in one run.

The trace is fixed by `--seed`: `--requests` requests over a pool of distinct bodies
(completions and chat completions, adapters with power-law popularity, `max_tokens`
between 4 and 24, greedy), each streamed or not, sent in trace order by `--clients`
concurrent clients (a closed loop: a client sends its next request when its answer is
complete). Both runs use the same `ServeConfig`, the tiny causal LM (stdlib
`tiny_causal_lm` shape, random weights; `--model llama50m`: the 58M random Llama of
`serve_throughput.py`, where compute matters) and `--adapters` random LoRA adapters.

- Engine alone: `build_engine(config)` in this process; prompts are parsed, tokenized and
  bounded by the server's own functions (`protocol.parse`, `prompts`) before the clock
  starts, then submitted with `Engine.submit_generate` as the server does, the next one
  from the engine's sink the moment one finishes. This is the ceiling HTTP can reach.
- Through HTTP: `fmc serve`'s `run(load_config(...))` in its own process on a loopback
  port (its engine in a process of its own, or with `--engine-thread` on a thread of the
  server's), driven by an aiohttp client with `--clients` connections. The clients share
  the machine's cores with the server: aiohttp (C HTTP parser; vLLM's serving benchmark
  uses it too) costs them about 0.3 CPU ms per request where httpx cost 2.5, as much as
  the engine itself on the tiny model.

It prints req/s of each and the ratio HTTP / engine, CPU ms per request of the engine
alone, of the server (its engine process included) and of the clients, and checks that
no request was lost and that every HTTP answer equals the engine's answer for the same
request (greedy). The server's resident memory (engine process included) is read before
(after a warm-up pass) and after the trace: with `--requests 5000` that shows whether
memory stays bounded. `--bad` adds a share of
bad requests (malformed JSON, unknown adapter, prompt over the token limit, missing
field) to the HTTP run only; each must get its 4xx JSON error. `--profile FILE` records
the server with py-spy (if installed) during the HTTP run.

    .venv/bin/python benchmarks/serve_load.py [--requests 3000] [--clients 64] [--model llama50m]
        [--engine-thread]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The engine-alone run gets the OpenMP wait policy `fmc serve` sets (fmlang/backends/serve/
# __init__.py) before torch loads, so both runs use the same one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import aiohttp
import httpx
import torch
from transformers.utils import logging as hf_logging

from fmlang.backends.serve import prompts
from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Engine, Event, Failed, Finished
from fmlang.backends.serve.fixtures import (
    build_llama,
    build_random_adapters,
    build_tiny_causal_lm,
    llama_config,
)
from fmlang.backends.serve.runtime import build_engine
from fmlang.backends.serve.sampling import Sampling

JSON = {"content-type": "application/json"}  # malformed bodies still say they are JSON
SERVER = (
    "import sys; from pathlib import Path; from fmlang.backends.serve.config import load_config; "
    "from fmlang.backends.serve.server import run; import torch; "
    "torch.set_num_threads(int(sys.argv[2])); run(load_config(Path(sys.argv[1])))"
)
BAD = {
    "malformed": (b'{"model": "a0", "prompt": ', 400),
    "unknown": ({"model": "nope", "prompt": "x"}, 404),
    "too_long": ({"model": "a1", "prompt": "y" * 600}, 400),
    "missing": ({"model": "a2"}, 400),
}
Answer = tuple[int, str]  # (HTTP status, text or error message)


@dataclass(frozen=True)
class Item:
    """One request of the trace: a body of the pool, streamed or not; or a bad request."""

    body: int
    stream: bool
    bad: str | None = None


# ---- the trace ---------------------------------------------------------------------------


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


def plan(rng: random.Random, requests: int, bodies: int, bad_share: float) -> list[Item]:
    work = [Item(rng.randrange(bodies), rng.random() < 0.3) for _ in range(requests)]
    bad = [Item(-1, False, rng.choice(list(BAD))) for _ in range(int(requests * bad_share))]
    for item in bad:  # bad requests go between the valid ones; the valid order is kept
        work.insert(rng.randrange(len(work) + 1), item)
    return work


# ---- the engine alone ----------------------------------------------------------------------


def engine_inputs(
    config: ServeConfig, engine: Engine, bodies: list[dict[str, Any]]
) -> list[tuple[str | None, list[int], Sampling]]:
    """Each body as the server turns it into a submission: parsed, tokenized, bounded."""

    async def one(body: dict[str, Any]) -> tuple[str | None, list[int], Sampling]:
        raw = json.dumps(body).encode()
        if "messages" in body:
            chat = wire.parse(wire.ChatRequest, raw)
            ids = await prompts.chat_ids(config, engine, chat)
            limit, name = chat.max_tokens, "max_tokens"
            if chat.max_completion_tokens is not None:
                limit, name = chat.max_completion_tokens, "max_completion_tokens"
            sampled: wire._Sampled = chat
        else:
            completion = wire.parse(wire.CompletionRequest, raw)
            (ids,) = await prompts.completion_ids(config, engine, completion)
            limit, name, sampled = completion.max_tokens, "max_tokens", completion
        adapter = None if body["model"] == config.model_name else body["model"]
        settings = prompts.sampling(config, engine, sampled, limit, len(ids), field=name)
        return adapter, ids, settings

    async def every() -> list[tuple[str | None, list[int], Sampling]]:
        return [await one(body) for body in bodies]

    return asyncio.run(every())


def engine_alone(
    config: ServeConfig, bodies: list[dict[str, Any]], work: list[Item], clients: int
) -> tuple[list[Answer], float, float]:
    """Run the valid items on an engine in this process, `clients` in flight; returns the
    answers in trace order, the seconds the trace took and the CPU seconds it used."""
    engine = build_engine(config)
    inputs = engine_inputs(config, engine, bodies)
    items = [item for item in work if item.bad is None]
    answers: list[Answer] = [(0, "")] * len(items)
    cursor = iter(range(len(items)))
    lock, done = threading.Lock(), threading.Event()
    remaining = [len(items)]

    def answered(index: int, answer: Answer) -> None:
        """Record an answer, then submit the next request of the trace (closed loop)."""
        answers[index] = answer
        with lock:
            remaining[0] -= 1
            following = next(cursor, None)
            last = remaining[0] == 0
        if following is not None:
            submit(following)
        elif last:
            done.set()

    def submit(index: int) -> None:
        adapter, ids, sampling = inputs[items[index].body]

        def sink(event: Event) -> None:
            if isinstance(event, Finished):
                answered(index, (200, event.text))
            elif isinstance(event, Failed):
                answered(index, (500, event.message))

        try:
            engine.submit_generate(adapter, ids, sampling, sink, stream=items[index].stream)
        except Exception as exc:  # refused (the queue is full): a lost request
            answered(index, (429, str(exc)))

    engine.start()
    try:
        warm = min(len(items), clients)  # one pass to warm the allocator and kernels
        warm_done = threading.Semaphore(0)
        for index in range(warm):
            adapter, ids, sampling = inputs[items[index].body]
            engine.submit_generate(
                adapter, ids, sampling, lambda e: warm_done.release() if _last(e) else None
            )
        for _ in range(warm):
            warm_done.acquire()
        start, cpu = time.perf_counter(), time.process_time()
        with lock:
            first = [i for _, i in zip(range(clients), cursor, strict=False)]
        for index in first:
            submit(index)
        if not items:
            done.set()
        done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        engine.stop()
    return answers, elapsed, cpu


def _last(event: Event) -> bool:
    return isinstance(event, Finished | Failed)


# ---- through HTTP ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: ServeConfig, folder: Path, threads: int) -> subprocess.Popen[bytes]:
    """`fmc serve`'s run() in its own process (its own GIL), ready when /ready says so."""
    path = folder / "server.json"
    path.write_text(config.model_dump_json(), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path), str(threads)], stderr=subprocess.DEVNULL
    )
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


def processes(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc): the server and its engine process."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            try:
                queue.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and its children (Linux /proc), all threads."""
    total = 0.0
    for each in processes(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` and its children in MiB (Linux /proc)."""
    total = 0.0
    for each in processes(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


async def send(session: aiohttp.ClientSession, body: Any, stream: bool) -> Answer:
    if isinstance(body, bytes):
        request = session.post("/v1/completions", data=body, headers=JSON)
    else:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        request = session.post(path, json={**body, "stream": stream})
    async with request as response:
        status, text = response.status, await response.text()
    if status != 200:
        error = json.loads(text)["error"]
        assert set(error) >= {"message", "type", "code", "param"}
        return status, error["message"]
    if stream:
        lines = [x[6:] for x in text.split("\n\n") if x.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        events = [json.loads(line) for line in lines[:-1]]
        if errors := [event["error"] for event in events if "error" in event]:
            return 500, errors[0]["message"]  # the stream ended with an error event
        choices = [e["choices"][0] for e in events if e["choices"]]  # usage chunk: none
        return 200, "".join(c.get("text") or c.get("delta", {}).get("content", "") for c in choices)
    choice = json.loads(text)["choices"][0]
    return 200, choice.get("text", choice.get("message", {}).get("content"))


async def drive(
    url: str, bodies: list[Any], work: list[Item], clients: int, pid: int
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        warm = [Item(i % len(bodies), i % 2 == 0) for i in range(max(clients, len(bodies)))]
        await asyncio.gather(*[send(client, bodies[w.body], w.stream) for w in warm])
        rss_before = rss_mib(pid)
        pending = iter(work)

        async def worker() -> list[tuple[Item, Answer | BaseException, float]]:
            done: list[tuple[Item, Answer | BaseException, float]] = []
            for item in pending:  # shared iterator: the next request in trace order
                start = time.perf_counter()
                body = BAD[item.bad][0] if item.bad else bodies[item.body]
                try:
                    answer: Answer | BaseException = await send(client, body, item.stream)
                except Exception as exc:  # a lost request, counted below
                    answer = exc
                done.append((item, answer, time.perf_counter() - start))
            return done

        start, cpu, mine = time.perf_counter(), cpu_seconds(pid), time.process_time()
        per_client = await asyncio.gather(*[worker() for _ in range(clients)])
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
        client_cpu = time.process_time() - mine
        rss_after = rss_mib(pid)
        async with client.get("/health") as response:
            health = response.status
        async with client.get("/metrics") as response:
            metrics = await response.text()
    results = [r for rs in per_client for r in rs]
    return {"results": results, "elapsed": elapsed, "health": health, "metrics": metrics,
            "rss": (rss_before, rss_after), "cpu": cpu,
            "client_cpu": client_cpu}  # fmt: skip


# ---- the report ----------------------------------------------------------------------------


def report(
    outcome: dict[str, Any],
    work: list[Item],
    engine: list[Answer],
    engine_s: float,
    engine_cpu: float,
) -> bool:
    """Print the comparison; True when nothing was lost or wrong. Besides wall-clock rates
    it prints CPU milliseconds per request in each run (the engine's process; the server's
    process): on a shared machine that figure moves far less than the wall clock."""
    valid_items = [item for item in work if item.bad is None]
    expected = {id(item): answer for item, answer in zip(valid_items, engine, strict=True)}
    results = outcome["results"]
    lost = [r for r in results if isinstance(r[1], BaseException)]
    finished = [r for r in results if not isinstance(r[1], BaseException)]
    statuses = collections.Counter(answer[0] for _, answer, _ in finished)
    wrong = 0
    for item, answer, _ in finished:
        if item.bad:
            wrong += answer[0] != BAD[item.bad][1]
        else:
            wrong += answer != expected[id(item)]
    lost_count = len(work) - len(finished)
    engine_failed = sum(status != 200 for status, _ in engine)
    valid = sorted(s for item, _, s in finished if item.bad is None)
    http_rate = len(valid_items) / outcome["elapsed"]
    engine_rate = len(valid_items) / engine_s
    count = len(valid_items)
    engine_ms, http_ms = 1000 * engine_cpu / count, 1000 * outcome["cpu"] / count
    print(
        f"engine alone: {engine_rate:7.1f} req/s ({count} requests in {engine_s:.2f} s; "
        f"{engine_ms:.2f} CPU ms per request)"
    )
    print(
        f"through HTTP: {http_rate:7.1f} req/s ({count} requests in "
        f"{outcome['elapsed']:.2f} s; {http_ms:.2f} server CPU ms per request, "
        f"{1000 * outcome.get('client_cpu', 0.0) / count:.2f} in the clients; "
        f"p50 {statistics.median(valid) * 1000:.0f} ms, "
        f"p95 {valid[int(0.95 * (len(valid) - 1))] * 1000:.0f} ms)"
    )
    print(
        f"HTTP / engine: {http_rate / engine_rate:.0%} of the engine's req/s; "
        f"CPU per request {engine_ms / http_ms:.0%} of HTTP's is the engine's"
    )
    print("HTTP responses by status:", dict(sorted(statuses.items())))
    print(
        f"lost {lost_count} (transport errors {len(lost)}), wrong {wrong} "
        f"(HTTP answer != engine answer), engine failures {engine_failed}, "
        f"/health afterwards {outcome['health']}"
    )
    for item, error, seconds in lost[:5]:
        print(f"  lost: {type(error).__name__}: {error!r} after {seconds:.2f} s ({item})")
    before, after = outcome["rss"]
    print(
        f"server RSS: {before:.0f} MiB before, {after:.0f} MiB after {len(work)} requests "
        f"(growth {after - before:+.0f} MiB)"
    )
    figures = dict(
        line.rsplit(" ", 1)
        for line in outcome["metrics"].splitlines()
        if line.startswith(("fmc_batch_rows_sum", "fmc_batch_rows_count"))
    )
    steps, rows = float(figures["fmc_batch_rows_count"]), float(figures["fmc_batch_rows_sum"])
    print(f"server: {steps:.0f} forward passes, {rows / steps:.1f} rows per pass on average")
    return not (lost_count or wrong or engine_failed or outcome["health"] != 200)


def profiler(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording the server (all threads, idle ones left out), if py-spy exists."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("--profile: py-spy is not installed (pip install py-spy)")
        return None
    fmt = "speedscope" if out.endswith(".json") else "flamegraph"
    cmd = [exe, "record", "--pid", str(pid), "-o", out, "-f", fmt, "-r", "200", "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=16)
    parser.add_argument("--bad", type=float, default=0.0, help="share of bad requests (HTTP)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=("tiny", "llama50m"), default="tiny")
    parser.add_argument("--profile", help="py-spy output of the server (.svg or .json)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="engine alone then HTTP, this many times"
    )
    parser.add_argument(
        "--engine-thread",
        action="store_true",
        help="the server runs the engine on a thread of its own process (engine_process "
        "false) instead of in a process of its own",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "llama50m":
            base = build_llama(Path(tmp) / "base", llama_config(), seed=0)
        else:
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
            engine_process=not args.engine_thread,
        )
        bodies = distinct_bodies(["base", *folders], rng, 60)
        work = plan(rng, args.requests, len(bodies), args.bad)
        print(
            f"{args.model}: {args.requests} requests ({sum(i.stream for i in work)} streamed), "
            f"{args.clients} clients, {args.adapters} adapters (8 device slots), "
            f"max_batch {args.max_batch}, {args.threads} torch threads, seed {args.seed}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, the server's engine in "
            + ("a thread" if args.engine_thread else "its own process")
            + (f", {args.bad:.0%} bad requests (HTTP only)" if args.bad else "")
        )
        server = start_server(config, Path(tmp), args.threads)
        url = f"http://{config.host}:{config.port}"
        ratios, ok = [], True
        try:
            for repeat in range(args.repeats):  # interleaved, so drift hits both alike
                if args.repeats > 1:
                    print(f"-- repeat {repeat + 1} of {args.repeats}")
                engine_answers, engine_s, engine_cpu = engine_alone(
                    config, bodies, work, args.clients
                )
                spy = profiler(server.pid, args.profile) if args.profile and not repeat else None
                try:
                    outcome = asyncio.run(drive(url, bodies, work, args.clients, server.pid))
                finally:
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                        spy.wait(timeout=60)
                ok = report(outcome, work, engine_answers, engine_s, engine_cpu) and ok
                ratios.append(engine_s / outcome["elapsed"])  # same requests: rate ratio
        finally:
            server.terminate()
            server.wait(timeout=60)
    if args.repeats > 1:
        listed = ", ".join(f"{ratio:.0%}" for ratio in ratios)
        print(f"HTTP / engine over {args.repeats} repeats: median {statistics.median(ratios):.0%} "
              f"({listed})")  # fmt: skip
    if not ok:
        raise SystemExit("FAILED: lost or wrong answers")
    print("OK: nothing lost, every HTTP answer equals the engine's")


if __name__ == "__main__":
    main()
