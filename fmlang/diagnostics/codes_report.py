"""Diagnostic codes from FM1160 on: the run report (`fmlang/backends/report/`)."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

REPORT_CODES: dict[str, Code] = {
    "FM1160": Code(
        "run report not written: matplotlib is missing",
        "At the end of `fmc run` the run's pictures (labeling functions, the label model "
        "against gold, training loss, per-group metrics against the fairness bound, predicted "
        "against measured memory and latency) are drawn with matplotlib into `run/report/` "
        "and `run/report.html`. matplotlib is not installed, so none was written; the run "
        "itself succeeded. Install the data extra (`pip install 'fmlang[data]'`) and run "
        "`fmc run` again: cached stages are not rerun.",
    ),
    "FM1161": Code(
        "run report not written: the build folder refused a write",
        "The run's pictures and `run/report.html` could not be written (a full disk, or "
        "`run/` not writable); the run itself succeeded and its results are in "
        "`run/report.json`. Free space or fix the folder's permissions and run `fmc run` "
        "again: cached stages are not rerun.",
    ),
}
