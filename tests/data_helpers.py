"""Shared helpers for the data-stage tests: write a spec and its CSV, run stages in-process."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from fmlang.api import build as build_artifacts
from fmlang.api import check_paths, compile_spec
from fmlang.backends.run import RunOptions, run
from fmlang.ir.nodes import Spec


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# Access fails closed: test specs grant everything to one principal, and run as it.
TESTER = "team:ml"
GRANT = f'  grant read, label, train, deploy to "{TESTER}"\n'


def compile_file(spec_path: Path) -> Spec:
    result = check_paths([spec_path], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    return compile_spec(result)


def run_spec(spec_path: Path, build: Path, until: str = "labels", principal: str | None = TESTER,
             force: bool = False) -> Any:  # fmt: skip
    """Build (when stale) and run, as `fmc run` does."""
    result = check_paths([spec_path], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    build_artifacts(result, build, only_if_stale=True)
    spec = compile_spec(result)
    options = RunOptions(build, spec_path, until, principal, force, log=lambda _: None)
    report, _ctx = run(spec, options, spec_path.read_text(encoding="utf-8"))
    return report


def rows(path: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(path).to_pylist())


def one_column_dataset(tmp_path: Path, values: list[str], clean: str, extra: str = "") -> Path:
    """A dataset `d` with columns id, body read from a CSV, cleaned by `clean`."""
    write_csv(tmp_path / "d.csv", ["id", "body"], [[i, v] for i, v in enumerate(values)])
    spec = tmp_path / "d.fm"
    spec.write_text(
        "dataset d {\n"
        '  source csv("d.csv", header = true)\n'
        "  schema {\n    id: string @id\n    body: text\n  }\n"
        f"  clean {{\n{clean}\n  }}\n{extra}{GRANT}"
        "}\n",
        encoding="utf-8",
    )
    return spec
