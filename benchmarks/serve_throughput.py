"""Multi-adapter serving throughput and time to first token: the batched engine against
the base model alone and against one-request-at-a-time peft, on one trace.

Models (fp32 CPU, random weights, the lossless byte tokenizer):
- `tiny`: the stdlib `tiny_causal_lm` (Llama, hidden 64, 2 layers, vocab 1000);
- `llama50m`: a Llama big enough that compute matters (hidden 512, 8 layers, 8 heads,
  intermediate 1376, vocab 32000; its parameter count is printed).
Adapters: random LoRA (ranks cycling 4, 8, 16; target sets varying from q/v to all seven
projections; `init_lora_weights=False`), `a0` … `a63`; a setting with N adapters uses the
first N.

Workload (S-LoRA's): `--requests` requests; request i asks adapter k with power-law
popularity p(k) ∝ 1/(k+1)^`--alpha`; prompts of 8 to 48 random byte-token ids; the same
`--new-tokens` limit and greedy decoding everywhere. One trace (prompts, arrival times,
popularity ranks) is replayed for every system and setting; only the adapter names differ
with the number of adapters (the base-only run asks for no adapter).

Two phases per model:
1. saturated (every request arrives at once): generated tokens/s per setting, as a ratio to
   the base model alone (an engine with no adapters configured) measured in the same run;
2. open loop (gamma arrivals, mean rate `--load` × the base model's saturated requests/s,
   coefficient of variation `--cv`): time to first token p50/p95 and latency; the
   oversubscribed setting (2 adapters per device slot) against the same adapters all
   resident is the eviction-cliff check (SGLang PR 13349 measured 40 ms → 6,278 ms there).
Settings: base; 1, 8, 64 adapters all resident; 16 adapters in 16 and in 8 slots.
peft: one `PeftModel` holding the adapters, requests one at a time in arrival order
(`set_adapter`, then greedy `generate`), on the first `--peft-requests` requests of the
open-loop trace; its outputs must equal the engine's token for token.

Printed per setting: tokens/s and requests/s, TTFT and latency p50/p95, ratios, identical
outputs, the cache's counters (device/host/disk hits, misses, evictions; prefetches and
prefetch hits; seconds spent reading adapters from disk and copying them into the slot
tensors) and the scheduler's (requests passed over, slots drained).

    .venv/bin/python benchmarks/serve_throughput.py [--quick] [--models tiny llama50m]
        [--requests 192] [--new-tokens 32] [--adapters 1 8 64] [--repeats 3] [--saturated-only]
    .venv/bin/python benchmarks/serve_throughput.py --profile-lora   # LoRA kernels on CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

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

RANKS = (4, 8, 16)
MODELS = ("tiny", "llama50m")


@dataclass(frozen=True)
class Setting:
    label: str
    adapters: int  # 0: the base model alone (no adapters configured)
    slots: int


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds after the trace starts
    rank: int  # popularity rank: the adapter is a{rank % adapters}
    prompt: list[int]


@dataclass(frozen=True)
class Outcome:
    tokens: tuple[int, ...]
    ttft: float
    latency: float
    finished: float


def make_trace(args: argparse.Namespace, seed: int) -> list[Request]:
    """Prompts, popularity ranks (out of 64) and unit-rate gamma gaps; `arrivals` scales."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([1.0 / (k + 1) ** args.alpha for k in range(64)])
    picks = torch.multinomial(weights, args.requests, replacement=True, generator=generator)
    shape = 1.0 / args.cv**2
    gaps = torch.distributions.Gamma(shape, shape).sample((args.requests,))
    arrivals = (gaps.cumsum(0) - gaps[0]).tolist()
    requests = []
    for index in range(args.requests):
        length = int(torch.randint(8, 49, (1,), generator=generator))
        prompt = torch.randint(3, 259, (length,), generator=generator).tolist()
        requests.append(Request(arrivals[index], int(picks[index]), prompt))
    return requests


def adapter_of(request: Request, count: int) -> str | None:
    """Popularity ranks folded onto `count` adapters, so the most popular stay popular."""
    return f"a{request.rank % count}" if count else None


def at_rate(requests: list[Request], rate: float | None) -> list[Request]:
    """The trace with its unit-rate gaps scaled to `rate` per second (None: all at 0)."""
    scale = 0.0 if rate is None else 1.0 / rate
    return [Request(r.arrival * scale, r.rank, r.prompt) for r in requests]


def run_engine(
    config: ServeConfig, requests: list[Request], count: int, new: int
) -> tuple[list[Outcome], Engine]:
    engine = build_engine(config)
    engine.start()
    outcomes: list[Outcome | None] = [None] * len(requests)
    left = threading.Semaphore(0)
    start = time.perf_counter()

    def sink_for(index: int, request: Request):  # type: ignore[no-untyped-def]
        def sink(event: Event) -> None:
            if isinstance(event, Failed):
                print(f"request {index} failed: {event.message}")
                left.release()
            if isinstance(event, Finished):
                now = time.perf_counter() - start
                latency = now - request.arrival
                outcomes[index] = Outcome(event.token_ids, event.first_token_s, latency, now)
                left.release()

        return sink

    for index, request in enumerate(requests):
        delay = request.arrival - (time.perf_counter() - start)
        if delay > 0:
            time.sleep(delay)
        sampling = Sampling(max_new_tokens=new)
        adapter = adapter_of(request, count)
        engine.submit_generate(adapter, request.prompt, sampling, sink_for(index, request))
    for _ in requests:
        left.acquire()
    engine.stop()
    missing = sum(o is None for o in outcomes)
    if missing:
        raise SystemExit(f"{missing} requests failed")
    return [o for o in outcomes if o is not None], engine


def run_peft(
    base: Path, folders: dict[str, Path], requests: list[Request], count: int, new: int
) -> list[Outcome]:
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    names = sorted({adapter_of(r, count) or "" for r in requests})
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
            began = time.perf_counter() - start
            peft_model.set_adapter(adapter_of(request, count))
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
            # one request at a time: its first token comes after its wait and its prefill,
            # about 1/len of its generation time
            first = began - request.arrival + (now - began) / max(1, len(tokens))
            outcomes.append(Outcome(tuple(tokens), first, now - request.arrival, now))
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(outcomes: list[Outcome], requests: list[Request]) -> dict[str, float]:
    span = max(o.finished for o in outcomes) - requests[0].arrival
    return {
        "req_s": len(outcomes) / span,
        "tok_s": sum(len(o.tokens) for o in outcomes) / span,
        "ttft50": statistics.median(o.ttft for o in outcomes),
        "ttft95": percentile([o.ttft for o in outcomes], 0.95),
        "lat50": statistics.median(o.latency for o in outcomes),
        "lat95": percentile([o.latency for o in outcomes], 0.95),
    }


def counters(engine: Engine) -> str:
    stats = engine.cache.stats()
    tiers = " ".join(f"{t}={s.hits}/{s.misses}/{s.evictions}" for t, s in stats.items())
    act = engine.cache.activity()
    return (
        f"hits/misses/evictions {tiers}; prefetches {act.prefetches} (hits "
        f"{act.prefetch_hits}); disk {act.disk_load_seconds * 1000:.0f} ms, slot writes "
        f"{act.slot_write_seconds * 1000:.0f} ms; passed over {engine.scheduler.skips}, "
        f"drained {engine.scheduler.drains}"
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f}"


def config_for(
    base: Path, folders: dict[str, Path], setting: Setting, args: argparse.Namespace
) -> ServeConfig:
    names = [f"a{i}" for i in range(setting.adapters)]
    return ServeConfig(
        base_model=str(base),
        adapters={name: str(folders[name]) for name in names},
        max_batch=args.max_batch,
        max_queue=args.requests,
        cache={"device_slots": max(1, setting.slots), "host_slots": max(1, setting.adapters)},
    )


def bench_model(model: str, root: Path, args: argparse.Namespace) -> None:
    if model == "tiny":
        base = build_tiny_causal_lm(root / "base", seed=0)
    else:
        base = build_llama(root / "base", llama_config(), seed=0)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    most = max([*args.adapters, 16 if args.oversubscribed else 0])
    folders = build_random_adapters(
        base, root / "adapters", [RANKS[i % len(RANKS)] for i in range(most)], seed=1
    )
    settings = [Setting("base", 0, 1)]
    settings += [Setting(f"{n} adapters", n, n) for n in args.adapters]
    if args.oversubscribed:
        settings += [Setting("16 in 16 slots", 16, 16), Setting("16 in 8 slots", 16, 8)]
    trace = make_trace(args, seed=7)
    print(
        f"\n== {model}: {params / 1e6:.1f}M parameters; {args.requests} requests, "
        f"{args.new_tokens} new tokens greedy, max_batch {args.max_batch}"
    )

    print(
        f"saturated (all requests at t=0): generated tok/s, ratio to the base model; best of "
        f"{args.repeats} round(s), the settings interleaved"
    )
    saturated: dict[str, dict[str, float]] = {}
    shown: dict[str, str] = {}
    for _ in range(args.repeats):
        for setting in settings:
            requests = at_rate(trace, None)
            config = config_for(base, folders, setting, args)
            outcomes, engine = run_engine(config, requests, setting.adapters, args.new_tokens)
            figures = summary(outcomes, requests)
            if figures["tok_s"] > saturated.get(setting.label, {}).get("tok_s", 0.0):
                saturated[setting.label], shown[setting.label] = figures, counters(engine)
    for setting in settings:
        figures = saturated[setting.label]
        ratio = figures["tok_s"] / saturated["base"]["tok_s"]
        print(
            f"  {setting.label:<15} {figures['tok_s']:8.0f} tok/s {figures['req_s']:7.1f} req/s"
            f"  {ratio:5.2f}x base   {shown[setting.label]}"
        )

    if args.saturated_only:
        return
    rate = args.load * saturated["base"]["req_s"]
    print(
        f"open loop (gamma arrivals {rate:.1f}/s = {args.load} x base capacity, cv {args.cv}): "
        "TTFT and latency p50/p95 in ms"
    )
    requests = at_rate(trace, rate)
    opened: dict[str, dict[str, float]] = {}
    outputs: dict[str, list[Outcome]] = {}
    for setting in settings:
        outcomes, engine = run_engine(
            config_for(base, folders, setting, args), requests, setting.adapters, args.new_tokens
        )
        outputs[setting.label] = outcomes
        opened[setting.label] = f = summary(outcomes, requests)
        print(
            f"  {setting.label:<15} TTFT {ms(f['ttft50'])} {ms(f['ttft95'])}  latency "
            f"{ms(f['lat50'])} {ms(f['lat95'])}  {f['req_s']:6.1f} req/s   {counters(engine)}"
        )
    if args.oversubscribed:
        resident, shared = opened["16 in 16 slots"], opened["16 in 8 slots"]
        full, half = saturated["16 in 16 slots"], saturated["16 in 8 slots"]
        print(
            f"  2 adapters per slot vs all resident: median TTFT "
            f"{shared['ttft50'] / resident['ttft50']:.2f}x (goal <= 3x), saturated throughput "
            f"{half['tok_s'] / full['tok_s']:.2f}x (goal >= 0.80x)"
        )

    if args.peft_requests:
        subset = requests[: args.peft_requests]
        print(f"peft one request at a time, the first {len(subset)} requests of the open loop")
        for count in [n for n in args.adapters if n]:
            naive = run_peft(base, folders, subset, count, args.new_tokens)
            ours = outputs[f"{count} adapters"][: len(subset)]
            same = sum(a.tokens == b.tokens for a, b in zip(naive, ours, strict=True))
            figures = summary(naive, subset)
            engine_rate = saturated[f"{count} adapters"]["tok_s"]
            print(
                f"  {count:>2} adapters  peft {figures['tok_s']:7.0f} tok/s  TTFT "
                f"{ms(figures['ttft50'])} {ms(figures['ttft95'])}  engine (saturated) "
                f"{engine_rate / figures['tok_s']:.1f}x peft; identical outputs "
                f"{same}/{len(subset)}"
            )


def _best(fn, n: int = 60) -> float:  # type: ignore[no-untyped-def]
    """Microseconds of the fastest of `n` calls (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1e6


def _profile_shape(rows: int, tokens: int, fan_in: int, fan_out: int) -> dict[str, float]:
    slots, rank = 16, 16
    torch.manual_seed(0)
    base = torch.nn.Linear(fan_in, fan_out, bias=False)
    a, b = torch.randn(slots, rank, fan_in), torch.randn(slots, fan_out, rank)
    popularity = 1 / torch.arange(1, slots + 1).float()
    picked = torch.multinomial(popularity, rows, replacement=True)
    x = torch.randn(rows, tokens, fan_in)
    order = torch.argsort(picked, stable=True)
    offsets = (torch.bincount(picked, minlength=slots).cumsum(0) * tokens).to(torch.int32)
    flat_a, flat_b = a.reshape(-1, fan_in), b.permute(1, 0, 2).reshape(fan_out, -1)
    mask = torch.zeros(rows, slots, rank)
    mask[torch.arange(rows), picked] = 1.0
    mask = mask.reshape(rows, 1, -1)

    def gathered() -> torch.Tensor:  # what lora.py does
        h = torch.bmm(x, a[picked].transpose(1, 2))
        return base(x) + torch.bmm(h, b[picked].transpose(1, 2))

    def per_slot() -> torch.Tensor:
        y = base(x)
        for slot in picked.unique().tolist():
            where = (picked == slot).nonzero().squeeze(1)
            part = x.index_select(0, where)
            y.index_add_(0, where, (part @ a[slot].T) @ b[slot].T)
        return y

    def grouped() -> torch.Tensor:  # SGMV-like: one segment of rows per slot
        y = base(x)
        xs = x.index_select(0, order).reshape(-1, fan_in)
        h = F.grouped_mm(xs, a.transpose(1, 2), offs=offsets)
        d = F.grouped_mm(h, b.transpose(1, 2), offs=offsets)
        return y.index_add_(0, order, d.reshape(rows, tokens, fan_out))

    def dense() -> torch.Tensor:  # every slot for every row, masked
        return base(x) + ((x @ flat_a.T) * mask) @ flat_b.T

    with torch.inference_mode():
        reference = gathered()
        for fn in (per_slot, grouped, dense):
            assert (fn() - reference).abs().max() < 1e-2
        result = {"base only": _best(lambda: base(x))}
        result.update({fn.__name__: _best(fn) for fn in (gathered, per_slot, grouped, dense)})
    return result


def profile_lora() -> None:
    """One LoRA layer's cost per strategy, at the shapes the two models have (16 slots of
    rank 16, rows picked by power-law popularity)."""
    print("LoRA strategies, microseconds per layer call (min of 60), fp32 CPU")
    for rows, tokens, fan_in, fan_out in [
        (32, 1, 512, 512),
        (32, 1, 512, 1376),
        (8, 40, 512, 512),
        (32, 1, 64, 64),
    ]:
        result = _profile_shape(rows, tokens, fan_in, fan_out)
        shown = "  ".join(f"{k} {v:6.0f}" for k, v in result.items())
        print(f"  rows {rows:>2} x {tokens:>2} tokens, {fan_in}->{fan_out}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small sanity run")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--no-oversubscribed", dest="oversubscribed", action="store_false")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--load", type=float, default=0.7, help="open-loop rate / capacity")
    parser.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gaps")
    parser.add_argument("--alpha", type=float, default=1.0, help="power-law popularity exponent")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--peft-requests", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--saturated-only", action="store_true", help="skip the open loop")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="saturated rounds (best kept): steadier on a busy machine",
    )
    parser.add_argument("--profile-lora", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.new_tokens, args.peft_requests = 32, 8, 4
        args.adapters = [1, 8]
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.profile_lora:
        profile_lora()
        return
    print(f"fp32 CPU, {args.threads} threads; popularity 1/(k+1)^{args.alpha}")
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            bench_model(model, Path(tmp), args)


if __name__ == "__main__":
    main()
