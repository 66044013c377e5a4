"""The run report: pictures of what a run measured and one self-contained HTML page.

At the end of `fmc run` (not a dry run), `write_run_report` reads the JSON the run left in
the build folder (`run/report.json` for the stages and their outputs, each labels stage's
analysis, each model's `metrics.json`; `inputs.py`), draws PNGs with matplotlib's Agg
backend (`figures.py`) into `run/report/`, and writes `run/report.html` (`page.py`) with
the same pictures embedded, so the page opens alone in a browser with no network:

- each labeling function's coverage, overlaps, conflicts and accuracy;
- the label model against the @gold labels, beside majority vote (where there is gold);
- training loss by step, and the evaluation loss early stopping measured;
- every gate with its confidence interval;
- each model's metric per group with its 95% interval, against the fairness bound;
- predicted against measured training memory and latency.

A section whose inputs are missing is left out. The paths written go into `run/report.json`
under `pictures`. Group names and labeling-function names come from the data and the spec,
so the files are private to the owner like everything else under `run/`. The report never
fails a run: without matplotlib it is FM1160, and a write that fails is FM1161 (warnings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmlang.atomic import private_files, replacing, write_json_atomic, write_text_atomic
from fmlang.diagnostics import Diagnostic, warning

PAGE = "run/report.html"
FOLDER = "run/report"
RUN_REPORT = "run/report.json"


def write_run_report(build_dir: Path) -> list[Diagnostic]:
    """Write the pictures and the page for the run recorded in `run/report.json` and list
    them there; the warnings to show (nothing is written without that file)."""
    from fmlang.backends.report.inputs import read_inputs, read_json

    report = read_json(build_dir / RUN_REPORT)
    if report is None:
        return []
    try:
        from fmlang.backends.report import page

        pictures: list[page.Picture] = []
        text = page.page(f"fmc run: {build_dir.resolve().name}", read_inputs(build_dir, report),
                         pictures)  # fmt: skip
    except ImportError as missing:
        if (missing.name or "").partition(".")[0] != "matplotlib":
            raise
        return [_no_matplotlib(missing)]
    try:
        with private_files():
            report["pictures"] = _write(build_dir, text, pictures)
            write_json_atomic(build_dir / RUN_REPORT, report)
    except OSError as failed:
        return [_not_written(failed)]
    return []


def _write(build_dir: Path, text: str, pictures: list[Any]) -> dict[str, Any]:
    """Write the PNGs and the page; remove the PNGs an earlier run drew that this one did
    not. The paths, relative to the build folder."""
    folder = build_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = set()
    for picture in pictures:
        with replacing(folder / picture.name) as tmp:
            tmp.write_bytes(picture.data)
        names.add(picture.name)
    for old in folder.glob("*.png"):
        if old.name not in names:
            old.unlink()
    write_text_atomic(build_dir / PAGE, text)
    return {"page": PAGE, "images": [f"{FOLDER}/{p.name}" for p in pictures]}


def _no_matplotlib(missing: ImportError) -> Diagnostic:
    return warning(
        "FM1160",
        f"the run report was not written: `{missing.name}` is not installed",
        help="install the data extra (`pip install 'fmlang[data]'`, which brings matplotlib) "
        "and run `fmc run` again: cached stages are not rerun",
    )


def _not_written(failed: OSError) -> Diagnostic:
    where = failed.filename or PAGE
    return warning(
        "FM1161",
        f"the run report was not written: `{where}`: {failed.strerror or failed}",
        help="free disk space or make the build folder's `run/` writable, then run `fmc run` "
        "again: cached stages are not rerun",
    )
