"""The cost of `fmc serve`'s access checks. The audit writer alone: how many decisions per
second it makes durable (group commit) and how long an allowed request waits for its
entry with many in flight, and what a flood of refusals costs the event loop (one queue
insertion each). With --http, the tiny model served through HTTP with and without API keys
and audit entries, alternating in the same run, as req/s and median latency and the ratio
of the two. Figures depend on the disk's fsync latency: run on the disk the log lives on.

    .venv/bin/python benchmarks/serve_audit.py [--folder DIR] [--concurrency 64] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from fmlang.backends.data.audit_verify import verify_log
from fmlang.backends.serve.audit_writer import AuditWriter


def _record(n: int, decision: str) -> dict[str, object]:
    return {"event": "serve", "stage": "query:bench", "principal": f"p{n % 7}",
            "endpoint": "/v1/completions", "model": "a0", "decision": decision}  # fmt: skip


async def _allowed(writer: AuditWriter, total: int, concurrency: int) -> list[float]:
    waits: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for n in queue:
            start = time.perf_counter()
            await writer.durable(_record(n, "allowed"))
            waits.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return waits


KEY = "fmc-bench-key-0123456789abcdef"


async def _requests(url: str, total: int, concurrency: int) -> tuple[float, float]:
    import httpx

    latencies: list[float] = []
    numbers = iter(range(total))
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:

        async def worker() -> None:
            for n in numbers:
                start = time.perf_counter()
                body = {"model": f"a{n % 4}", "prompt": "hello there", "max_tokens": 8}
                answer = await client.post("/v1/completions", json=body)
                assert answer.status_code == 200, answer.text
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - start), statistics.median(latencies)


def http(folder: Path, rounds: int, total: int, concurrency: int) -> None:
    """The same load with and without the gate, alternating, `rounds` times each."""
    from fmlang.backends.serve.config import ServeConfig
    from fmlang.backends.serve.exposure import prepare_gate
    from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm
    from fmlang.backends.serve.runtime import build_engine
    from fmlang.backends.serve.server import serve_in_background

    base = build_tiny_causal_lm(folder / "base", seed=4)
    adapters = build_random_adapters(base, folder / "adapters", [4, 4, 4, 4], seed=5)
    keys = folder / "keys"
    keys.write_text(f"service:bench {KEY}\n", encoding="utf-8")
    keys.chmod(0o600)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(rounds):
        for gated in (False, True):
            config = ServeConfig(
                base_model=str(base), adapters={k: str(v) for k, v in adapters.items()},
                deploy="bench", query_principals=("service:bench",),
                audit_log=str(folder / f"audit-{round_}.log"),
            )  # fmt: skip
            gate = prepare_gate(config, keys, environ={}) if gated else None
            server = serve_in_background(config, build_engine(config), gate)
            try:
                asyncio.run(_requests(server.url, 32, concurrency))  # warm up
                rate, median = asyncio.run(_requests(server.url, total, concurrency))
            finally:
                server.stop()
                if gate is not None:
                    gate.writer.close()
            rates[gated].append(rate)
            label = "keys+audit" if gated else "open"
            print(f"http round {round_ + 1} {label}: {rate:.1f} req/s, median latency "
                  f"{median * 1e3:.1f} ms", flush=True)  # fmt: skip
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    print(f"http: with keys and audit / open = {ratio:.2f} (median req/s over {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=None, help="where the log goes")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--allowed", type=int, default=4000)
    parser.add_argument("--denied", type=int, default=50000)
    parser.add_argument("--http", action="store_true", help="also serve the tiny model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        if args.http:
            http(Path(folder), args.rounds, args.requests, args.concurrency)
        log = Path(folder) / "audit.log"
        writer = AuditWriter([log], None)
        writer.start({"event": "serve-start"})
        start = time.perf_counter()
        waits = asyncio.run(_allowed(writer, args.allowed, args.concurrency))
        elapsed = time.perf_counter() - start
        quantiles = statistics.quantiles(waits, n=100)
        print(f"allowed: {args.allowed / elapsed:,.0f} durable entries/s at concurrency "
              f"{args.concurrency}; wait p50 {quantiles[49] * 1e3:.2f} ms, "
              f"p95 {quantiles[94] * 1e3:.2f} ms")  # fmt: skip
        start = time.perf_counter()
        for n in range(args.denied):
            writer.record(_record(n, "denied"))
        queued = time.perf_counter() - start
        writer.close()
        drained = time.perf_counter() - start
        print(
            f"denied: {queued / args.denied * 1e6:.2f} µs per refusal on the event loop; "
            f"{args.denied:,} written in {drained:.2f} s ({args.denied / drained:,.0f}/s)"
        )
        verdict = verify_log(log)
        assert verdict.ok and verdict.entries == 1 + args.allowed + args.denied, verdict
        print(f"log verified: {verdict.entries:,} entries")


if __name__ == "__main__":
    main()
