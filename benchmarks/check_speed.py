"""How fast `fmc check` is on a 5,000-line spec, and how fast `fmc --help` starts.

Each figure is a whole process, timed as the median of several runs, and compared in the
same run against a baseline: a bare `python -c pass`. Targets (issue 2): the 5,000-line
check under 1 s; `fmc --help` under 4x the bare interpreter.

    .venv/bin/python benchmarks/check_speed.py [--lines 5000] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = """\
import std.models.minilm_l6
import std.hardware.{cpu_2core, h100}
"""

UNIT = """\
# unit {i}: one team's data, labels, model, constraints and deployment
dataset comments_{i} {{
  source csv("data/comments_{i}/*.csv")
  schema {{
    COMMENT_ID: string @id
    AUTHOR:     string @pii
    CONTENT:    text
    CLASS:      label[ham, spam] @gold
    video:      category @protected = source_file
  }}
  clean {{
    dedupe CONTENT
    drop where length(CONTENT) < 3
    redact pii in CONTENT
    drop AUTHOR
  }}
  split {{ train 80%, dev 10%, test 10% by hash(COMMENT_ID) }}
  grant read, train to "team:ml"
}}

labels spam_{i} on comments_{i}.train {{
  classes [ham, spam]
  lf check_out: CONTENT ~ /check (it )?out/i -> spam
  lf subscribe: lower(CONTENT) contains "subscribe" -> spam
  lf link:      CONTENT ~ /https?:\\/\\/\\S+/ -> spam
  lf short:     words(CONTENT) < 5 and not (CONTENT ~ /http/) -> ham
  lf song:      lower(CONTENT) contains "song" -> ham
  model label_model(epochs = 500)
}}

model spam_filter_{i} {{
  base    minilm_l6
  task    classify(spam_{i})
  adapter lora(rank = auto in [4, 8, 16], alpha = 16, dropout = 0.1, targets = [query, value])
  max_seq 128
  train {{
    data   = spam_{i}
    input  = CONTENT
    epochs = 3
    lr     = 3e-4
    batch  = auto
  }}
  eval {{ on = [comments_{i}.test], metrics = [accuracy, f1], by = [video] }}
}}

constraints spam_filter_{i} {{
  memory <= 512MiB on cpu_2core
  latency.p95 <= 30ms on cpu_2core
  accuracy >= 0.90 on comments_{i}.test
  max_gap(accuracy, by = video) <= 0.08 on comments_{i}.test
  no_pii in training_data
  license allows commercial
}}

deploy spam_filter_{i} {{
  local {{ port = 8080 }}
  kserve {{ replicas = 1..4, hardware = h100 }}
}}

"""


def generate(lines: int) -> str:
    parts = [HEADER]
    total, i = HEADER.count("\n"), 0
    while total < lines:
        unit = UNIT.format(i=i)
        parts.append(unit)
        total += unit.count("\n")
        i += 1
    return "".join(parts)


def median_seconds(command: list[str], runs: int, expect: int | None = 0) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if expect is not None and done.returncode != expect:
            sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    script = Path(python).with_name("fmc")  # the installed console script, as users run it
    fmc = [str(script)] if script.exists() else [python, "-m", "fmlang"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "big.fm"
        spec.write_text(generate(args.lines), encoding="utf-8")
        n_lines = spec.read_text().count("\n")
        n_models = spec.read_text().count("\nmodel ")
        for i in range(n_models):  # `fmc check` looks at each source's header
            data = Path(tmp) / "data" / f"comments_{i}"
            data.mkdir(parents=True)
            (data / "part.csv").write_text("COMMENT_ID,AUTHOR,CONTENT,CLASS\n1,a,hello,0\n")
        median_seconds([*fmc, "check", "--no-verify", str(spec)], 1)  # warm the grammar cache
        bare = median_seconds([python, "-c", "pass"], args.runs)
        helptime = median_seconds([*fmc, "--help"], args.runs)
        check = median_seconds([*fmc, "check", "--no-verify", str(spec)], args.runs)
        verified = median_seconds([*fmc, "check", str(spec)], max(args.runs // 3, 1), None)
    print(f"python -c pass           {bare * 1000:8.1f} ms")
    print(
        f"fmc --help               {helptime * 1000:8.1f} ms   ratio {helptime / bare:.2f}x "
        f"(target < 4x)"
    )
    print(
        f"fmc check --no-verify {n_lines:,}-line spec {check * 1000:8.1f} ms   "
        f"{'ok' if check < 1.0 else 'OVER'} (target < 1000 ms), "
        f"{check / bare:.1f}x a bare interpreter"
    )
    print(
        f"fmc check, Z3 included ({n_models} models) {verified * 1000:8.1f} ms   "
        f"{verified / check:.1f}x the unverified check"
    )


if __name__ == "__main__":
    main()
