"""How fast the Z3 verification is, next to the checker passes on the same spec.

In one process, for the largest example (`examples/**/*.fm` by size) and for a generated
spec with 20 models, constraint blocks and deployments (every knob `auto`), this times
`fmlang.verify.verify(spec, program)` and, as the baseline, `fmlang.check.run_passes` on
a freshly loaded copy of the same spec. Each figure is the median of `--runs` runs after
`--warmup` runs; parsing and building the IR are outside both timers. Target: verifying
the largest example under 200 ms.

    .venv/bin/python benchmarks/verify_speed.py [--runs 20] [--warmup 3] [--units 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fmlang.api import CheckResult, compile_spec
from fmlang.check import load, run_passes
from fmlang.verify import verify

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 200.0

HEADER = """\
import std.models.{minilm_l6, qwen2_5_0_5b}
import std.hardware.{cpu_2core, a10g}
"""

UNIT = """\
dataset tickets_{i} {{
  source jsonl("data/tickets_{i}.jsonl")
  schema {{
    ticket_id: string @id
    email:     string @pii
    question:  text
    answer:    text
    region:    category @protected
  }}
  clean {{ redact pii in question, answer; drop email }}
  split {{ train 80%, test 20% by hash(ticket_id) }}
  epsilon_budget 8
  grant read, train to "team:support"
}}

model assistant_{i} {{
  base     qwen2_5_0_5b
  task     generate
  adapter  lora(rank = auto in [4, 8, 16, 32], targets = [q_proj, k_proj, v_proj, o_proj])
  quantize auto
  max_seq  1024
  train {{
    data       = tickets_{i}.train
    prompt     = question
    completion = answer
    batch      = auto in [4, 8, 16]
    seq_len    = 512
    hardware   = a10g
    dp {{ epsilon = 4, delta = 1e-5 }}
  }}
  grant train to "team:support"
}}

constraints assistant_{i} {{
  memory <= 8GiB on a10g
  latency.p95 <= 1s on a10g
  throughput >= 50req/s on a10g
  cost <= 5USD/h
  perplexity <= 15 on tickets_{i}.test
  no_pii in training_data
  dp_epsilon <= 8 on tickets_{i}
  license allows commercial
}}

deploy assistant_{i} {{
  adapters     dynamic
  max_adapters auto in [1, 4, 16]
  batch        auto in [1, 2, 4, 8, 16]
  visibility   internal
  kserve {{ hardware = a10g, runtime = vllm, replicas = auto in (1..4), max_lora_rank = 64 }}
}}

"""


def generate(units: int) -> str:
    return HEADER + "".join(UNIT.format(i=i) for i in range(units))


def largest_example() -> Path:
    return max(sorted(ROOT.glob("examples/**/*.fm")), key=lambda p: p.stat().st_size)


def median_ms(setup: Callable[[], object], timed: Callable[[object], object], runs: int,
              warmup: int) -> float:  # fmt: skip
    times = []
    for index in range(warmup + runs):
        state = setup()
        start = time.perf_counter()
        timed(state)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(path: Path, runs: int, warmup: int) -> tuple[float, float, str]:
    checked = CheckResult(run_passes(load([path])))
    assert checked.ok, [d.message for d in checked.diagnostics]
    spec = compile_spec(checked)
    report = verify(spec, checked.program)
    conflicts = len(report.diagnostics)
    verdict = "feasible" if report.feasible else f"infeasible: {conflicts} conflict(s)"
    check_ms = median_ms(lambda: load([path]), run_passes, runs, warmup)  # type: ignore[arg-type]
    verify_ms = median_ms(lambda: None, lambda _: verify(spec, checked.program), runs, warmup)
    return check_ms, verify_ms, verdict


def show(label: str, path: Path, figures: tuple[float, float, str], target: bool) -> None:
    check_ms, verify_ms, verdict = figures
    lines = path.read_text(encoding="utf-8").count("\n")
    print(f"{label}: {lines} lines ({verdict})")
    print(f"  check passes (baseline) {check_ms:8.1f} ms")
    print(f"  verify()                {verify_ms:8.1f} ms   ratio {verify_ms / check_ms:.1f}x"
          + (f"   {'ok' if verify_ms < TARGET_MS else 'OVER'} (target < {TARGET_MS:.0f} ms)"
             if target else ""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--units", type=int, default=20)
    args = parser.parse_args()
    example = largest_example()
    show(f"largest example {example.relative_to(ROOT)}", example,
         measure(example, args.runs, args.warmup), target=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "generated.fm"
        spec.write_text(generate(args.units), encoding="utf-8")
        show(f"generated spec, {args.units} models/constraints/deployments", spec,
             measure(spec, args.runs, args.warmup), target=False)  # fmt: skip


if __name__ == "__main__":
    main()
