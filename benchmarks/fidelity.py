"""The verifier's training-memory verdicts and figures against public measured GPU runs.

Every case under `tests/fidelity/` (a spec with the measured figure in its header, see
`fmlang/verify/fidelity.py`) is verified; the per-device prediction is compared with the
measurement in the same metric. Prints each case (verdict, predicted, measured, ratio, the
largest terms) and the summary: verdict agreement, false "fits", false "OOM", median and
p90 absolute error of the figures (cases marked as upper bounds are listed, not scored).

    .venv/bin/python benchmarks/fidelity.py [--folder tests/fidelity] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fmlang.verify.fidelity import Scored, Summary, cases, score, summarise

ROOT = Path(__file__).resolve().parent.parent
GIB = 2.0**30


def shown(value: float, metric: str) -> float:
    return value if metric == "decode" else value / GIB


def row(s: Scored) -> str:
    verdict = "?" if s.fits is None else ("fits" if s.fits else "OOM")
    agree = "ok" if s.agrees else "WRONG"
    if s.predicted is None:
        measured = shown(s.case.measured, s.case.metric)
        return f"{s.case.id:16} {verdict:5} {agree:5} {'-':>8} {measured:8.2f}  {s.error}"
    top = sorted(s.terms.items(), key=lambda kv: kv[1], reverse=True)[:3]
    terms = ", ".join(f"{k} {v / GIB:.1f}" for k, v in top)
    bound = " (upper bound)" if s.case.upper_bound else ""
    return (
        f"{s.case.id:16} {verdict:5} {agree:5} {shown(s.predicted, s.case.metric):8.2f} "
        f"{shown(s.case.measured, s.case.metric):8.2f} {s.ratio or 0:6.2f}  {s.case.metric:9} "
        f"{terms}{bound}"
    )


def report(title: str, summary: Summary) -> None:
    print(
        f"{title}: verdicts agree {summary.agree}/{summary.total}; false fits "
        f"{summary.false_fits}; false OOM {summary.false_oom}"
    )
    if summary.median_error is not None and summary.p90_error is not None:
        print(
            f"  figures ({summary.scored_errors} cases, upper bounds excluded): median |error| "
            f"{summary.median_error:.1%}, p90 {summary.p90_error:.1%}"
        )
    if summary.broken_bounds:
        print(f"  upper bounds predicted below the measurement: {', '.join(summary.broken_bounds)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "tests" / "fidelity")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    scored = [score(case) for case in cases(args.folder)]
    header = f"{'case':16} {'says':5} {'':5} {'pred GiB':>8} {'meas GiB':>8} {'ratio':>6}"
    print(header + "  metric    terms")
    for s in scored:
        print(row(s))
    print(f"\nverdicts agree {summarise(scored).agree}/{len(scored)}")
    for title, metrics in (("training memory", ("allocated", "reserved", "device")),
                           ("decode throughput", ("decode",))):  # fmt: skip
        report(title, summarise([s for s in scored if s.case.metric in metrics]))
    if args.json:
        rows = [
            {"case": s.case.id, "fits": s.fits, "ran": s.case.ran, "predicted": s.predicted,
             "measured": s.case.measured, "metric": s.case.metric, "terms": s.terms,
             "upper_bound": s.case.upper_bound, "error": s.error}
            for s in scored
        ]  # fmt: skip
        args.json.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
