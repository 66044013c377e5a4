"""The bandwidth a memory-bound decode step reaches, against the device's copy bandwidth.

A batch-1 decode step multiplies one activation vector by every weight matrix once: a
stream of weight reads. This times that stream (bf16 matrix-vector products over about
8 GiB of Llama-shaped weights, CUDA events, after warm-up) and, in the same run, a plain
device-to-device copy of the same bytes, and prints both as GB/s, their ratio, and the
stream's fraction of the datasheet bandwidth passed with `--datasheet` (the cost model's
`BANDWIDTH_EFFICIENCY`). Needs a CUDA device.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasheet", type=float, required=True, help="bytes/s")
    parser.add_argument("--gib", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=20)
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

    flat = torch.empty(total // 2, dtype=torch.bfloat16, device="cuda")
    out = torch.empty_like(flat)
    stream = total / timed(decode, args.repeats)
    copy = 2 * total / timed(lambda: out.copy_(flat), args.repeats)  # bytes read + written
    result = {
        "gpu": torch.cuda.get_device_name(),
        "bytes": total,
        "decode_stream_GBps": stream / 1e9,
        "copy_GBps": copy / 1e9,
        "stream_over_copy": stream / copy,
        "stream_over_datasheet": stream / args.datasheet,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
