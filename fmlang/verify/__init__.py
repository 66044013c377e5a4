"""Static verification with Z3: resource bounds from the cost model, policies, knob choice.

`verify(spec, program)` encodes the spec (`encode`), solves it (`solve`) and reports each
constraint's verdict and estimate (`report`). Runtime gates (accuracy, fairness gaps,
measured latency) are listed as gates, checked when the executor runs.
"""

from __future__ import annotations

from fmlang.check.program import Program
from fmlang.ir.nodes import Spec
from fmlang.verify.access import access_diagnostics
from fmlang.verify.encode import encode
from fmlang.verify.exposure import exposure_diagnostics
from fmlang.verify.partition import partition
from fmlang.verify.report import VerifyReport, build_report, merge_reports
from fmlang.verify.solve import solve
from fmlang.verify.spans import SpanIndex


def verify(spec: Spec, program: Program) -> VerifyReport:
    spans = SpanIndex(program)
    reports = []
    for part in partition(spec):
        problem = encode(part, spans)
        reports.append(build_report(part, problem, solve(problem)))
    report = merge_reports(spec, reports)
    denied = access_diagnostics(spec)  # fail closed: plain set algebra, no solver needed
    denied += exposure_diagnostics(spec)  # an internal endpoint on a public address
    report.diagnostics.extend(denied)
    report.feasible = report.feasible and not denied
    return report


__all__ = ["VerifyReport", "verify"]
