"""The bandwidth a memory-bound decode step reaches, against the device's copy bandwidth.

A batch-1 decode step multiplies one activation vector by every weight matrix once: a
stream of weight reads. This times that stream (bf16 matrix-vector products over about
8 GiB of Llama-shaped weights, CUDA events, after warm-up) and, in the same run, a plain
device-to-device copy of the same bytes, and prints both as GB/s, their ratio, and the
stream's fraction of the datasheet bandwidth passed with `--datasheet` (the cost model's
`BANDWIDTH_EFFICIENCY`). `--int8` also times int8 weight-only matrices with a per-row scale,
dequantized inside the product by `torch.compile` (gpt-fast's int8 scheme), counting the
int8 bytes and scales read. Needs a CUDA device.

    python benchmarks/decode_bandwidth.py --datasheet 4.8e12
"""

from __future__ import annotations

import argparse
import json

import torch


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of `fn()` over `repeats` runs after three warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def int8_stream(weights: list[torch.Tensor], x: torch.Tensor, repeats: int) -> float:
    """Bytes per second of int8 weight-only products (int8 codes + one bf16 scale per row),
    the dequantization fused into the product by torch.compile."""
    quantized = []
    for w in weights:
        scale = w.abs().amax(dim=1, keepdim=True).float() / 127
        quantized.append(((w.float() / scale).round().to(torch.int8), scale.to(torch.bfloat16)))
    weights.clear()

    @torch.compile(mode="max-autotune-no-cudagraphs")
    def product(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, w.to(x.dtype)) * s.T

    def decode() -> None:
        for w, s in quantized:
            product(x, w, s)

    total = sum(w.numel() + s.numel() * 2 for w, s in quantized)
    return total / timed(decode, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasheet", type=float, required=True, help="bytes/s")
    parser.add_argument("--gib", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args()
    hidden, inter = 4096, 14336  # one Llama-3-8B MLP matrix: 4096 x 14336
    per = hidden * inter * 2
    count = int(args.gib * 2**30 // per)
    weights = [
        torch.randn(inter, hidden, dtype=torch.bfloat16, device="cuda") for _ in range(count)
    ]
    x = torch.randn(1, hidden, dtype=torch.bfloat16, device="cuda")
    total = per * count

    def decode() -> None:
        for w in weights:
            torch.nn.functional.linear(x, w)

    stream = total / timed(decode, args.repeats)
    int8 = int8_stream(weights, x, args.repeats) if args.int8 else None  # frees `weights`
    flat = torch.empty(total // 2, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(flat)
    copy = 2 * total / timed(lambda: out.copy_(flat), args.repeats)  # bytes read + written
    result = {
        "gpu": torch.cuda.get_device_name(),
        "bytes": total,
        "decode_stream_GBps": stream / 1e9,
        "copy_GBps": copy / 1e9,
        "stream_over_copy": stream / copy,
        "stream_over_datasheet": stream / args.datasheet,
    }
    if int8 is not None:
        result["int8_stream_GBps"] = int8 / 1e9
        result["int8_over_datasheet"] = int8 / args.datasheet
        result["int8_over_bf16_stream"] = int8 / stream
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
