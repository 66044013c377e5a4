"""Multi-adapter serving throughput: the batched engine against one-request-at-a-time peft.

Model: the stdlib `tiny_causal_lm` (LlamaForCausalLM, hidden 64, 2 layers, 4 heads, 2 KV
heads, intermediate 128, vocab 1000, random weights), fp32 on CPU, with 1, 8 and 64 random
LoRA adapters (ranks cycling 4, 8, 16; target sets varying; `init_lora_weights=False`).

Workload (S-LoRA's): `--requests` requests; request i asks adapter k with power-law
popularity p(k) ∝ 1/(k+1)^`--alpha`; prompts of 8 to 48 random token ids; exactly the same
`--new-tokens` limit and greedy decoding for both systems; arrivals with gamma-distributed
gaps (shape `--cv`⁻², mean 1/`--rate`), the same trace replayed for both systems.

- baseline: one `PeftModel` holding every adapter; requests served one at a time in arrival
  order, `set_adapter(name)` then `generate` (greedy, KV cache).
- engine: `fmlang.backends.serve` (batched multi-LoRA rows, continuous batching,
  `--max-batch` rows, `--slots` device adapter slots, so 64 adapters also exercise eviction).

Printed per setting: requests/s and generated tokens/s over the whole trace (first arrival to
last completion), p50/p95 latency (arrival to completion), the engine/baseline throughput
ratio, whether every output is identical between the two, and the engine's cache counters.

    .venv/bin/python benchmarks/serve_throughput.py [--requests 200] [--adapters 1 8 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Event, Failed, Finished
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm
from fmlang.backends.serve.runtime import build_engine
from fmlang.backends.serve.sampling import Sampling

RANKS = (4, 8, 16)


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds after the trace starts
    adapter: str
    prompt: list[int]


@dataclass(frozen=True)
class Outcome:
    tokens: tuple[int, ...]
    latency: float
    finished: float


def trace(adapters: list[str], args: argparse.Namespace, seed: int) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([1.0 / (k + 1) ** args.alpha for k in range(len(adapters))])
    picks = torch.multinomial(weights, args.requests, replacement=True, generator=generator)
    shape = 1.0 / args.cv**2
    gaps = torch.distributions.Gamma(shape, shape * args.rate).sample((args.requests,))
    arrivals = (gaps.cumsum(0) - gaps[0]).tolist()
    requests = []
    for index in range(args.requests):
        length = int(torch.randint(8, 49, (1,), generator=generator))
        prompt = torch.randint(3, 259, (length,), generator=generator).tolist()
        requests.append(Request(arrivals[index], adapters[int(picks[index])], prompt))
    return requests


def run_baseline(
    base: Path, folders: dict[str, Path], requests: list[Request], new: int
) -> list[Outcome]:
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    names = list(folders)
    peft_model = PeftModel.from_pretrained(model, str(folders[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(folders[name]), adapter_name=name)
    peft_model.eval()
    outcomes = []
    start = time.perf_counter()
    with torch.inference_mode():
        for request in requests:
            delay = request.arrival - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
            peft_model.set_adapter(request.adapter)
            out = peft_model.generate(
                input_ids=torch.tensor([request.prompt]),
                attention_mask=torch.ones(1, len(request.prompt), dtype=torch.long),
                max_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )
            tokens = out[0, len(request.prompt) :].tolist()
            if tokens and tokens[-1] == 2:
                tokens = tokens[:-1]
            now = time.perf_counter() - start
            outcomes.append(Outcome(tuple(tokens), now - request.arrival, now))
    return outcomes


def run_engine(config: ServeConfig, requests: list[Request], new: int) -> tuple[list[Outcome], str]:
    engine = build_engine(config)
    engine.start()
    outcomes: list[Outcome | None] = [None] * len(requests)
    left = threading.Semaphore(0)
    start = time.perf_counter()

    def sink_for(index: int, request: Request):  # type: ignore[no-untyped-def]
        def sink(event: Event) -> None:
            if isinstance(event, Failed):
                raise SystemExit(f"request {index} failed: {event.message}")
            if isinstance(event, Finished):
                now = time.perf_counter() - start
                outcomes[index] = Outcome(event.token_ids, now - request.arrival, now)
                left.release()

        return sink

    for index, request in enumerate(requests):
        delay = request.arrival - (time.perf_counter() - start)
        if delay > 0:
            time.sleep(delay)
        sampling = Sampling(max_new_tokens=new)
        engine.submit_generate(request.adapter, request.prompt, sampling, sink_for(index, request))
    for _ in requests:
        left.acquire()
    engine.stop()
    stats = engine.cache.stats()
    counters = " ".join(f"{tier}={s.hits}/{s.misses}/{s.evictions}" for tier, s in stats.items())
    return [o for o in outcomes if o is not None], f"cache hits/misses/evictions: {counters}"


def summary(outcomes: list[Outcome], requests: list[Request]) -> dict[str, float]:
    span = max(o.finished for o in outcomes) - requests[0].arrival
    latencies = sorted(o.latency for o in outcomes)
    tokens = sum(len(o.tokens) for o in outcomes)
    return {
        "req_s": len(outcomes) / span,
        "tok_s": tokens / span,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def line(label: str, figures: dict[str, float]) -> str:
    return (
        f"  {label:<9} {figures['req_s']:8.1f} req/s {figures['tok_s']:9.0f} tok/s"
        f"   p50 {figures['p50'] * 1000:8.1f} ms   p95 {figures['p95'] * 1000:8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="mean arrivals per second")
    parser.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gaps")
    parser.add_argument("--alpha", type=float, default=1.0, help="power-law popularity exponent")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--slots", type=int, default=16, help="device adapter slots")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(
        f"tiny_causal_lm, fp32 CPU, {args.threads} threads; {args.requests} requests, "
        f"{args.new_tokens} new tokens greedy, gamma arrivals {args.rate}/s cv {args.cv}, "
        f"popularity 1/k^{args.alpha}; engine max_batch {args.max_batch}, {args.slots} slots"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_causal_lm(Path(tmp) / "base", seed=0)
        for count in args.adapters:
            ranks = [RANKS[i % len(RANKS)] for i in range(count)]
            folders = build_random_adapters(base, Path(tmp) / f"set{count}", ranks, seed=count)
            requests = trace(list(folders), args, seed=count)
            config = ServeConfig(
                base_model=str(base),
                adapters={name: str(path) for name, path in folders.items()},
                max_batch=args.max_batch,
                max_queue=args.requests,
                cache={"device_slots": min(args.slots, count), "host_slots": 64},
            )
            baseline = run_baseline(base, folders, requests, args.new_tokens)
            engine, cache = run_engine(config, requests, args.new_tokens)
            same = sum(a.tokens == b.tokens for a, b in zip(baseline, engine, strict=True))
            naive, ours = summary(baseline, requests), summary(engine, requests)
            print(f"{count} adapter(s):")
            print(line("peft", naive))
            print(line("engine", ours))
            print(
                f"  ratio     {ours['req_s'] / naive['req_s']:.1f}x throughput; identical "
                f"outputs {same}/{len(requests)}; {cache}"
            )


if __name__ == "__main__":
    main()
