"""Sources are confined to the project folder and the folders the user allows outside the
spec: `fmc check` refuses a source that leaves them (FM0319, at the source's path), and the
data stage checks again just before it reads (FM0730, recorded in the audit log)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.api import build, check_paths, compile_spec
from fmlang.backends.data.audit_verify import verify_log
from fmlang.backends.run import RunOptions, run
from fmlang.cli.main import cli
from fmlang.errors import StageError
from fmlang.files import DATA_DIRS_ENV, DataRoots, source_escapes
from tests.data_helpers import GRANT, TESTER, run_spec, write_csv

SECRET = "secret-row-outside-the-project"


@pytest.fixture(autouse=True)
def _no_configured_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIRS_ENV, raising=False)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/project/ (the spec's folder, data/ok.csv inside) and tmp/outside/secret.csv."""
    write_csv(tmp_path / "outside" / "secret.csv", ["id", "body"], [["1", SECRET]])
    write_csv(tmp_path / "project" / "data" / "ok.csv", ["id", "body"], [["1", "fine"]])
    return tmp_path


def _spec(project: Path, source: str, prelude: str = "") -> Path:
    spec = project / "spec.fm"
    spec.write_text(
        f"{prelude}dataset d {{\n  source {source}\n"
        "  schema {\n    id: string @id\n    body: text\n  }\n"
        f"{GRANT}}}\n",
        encoding="utf-8",
    )
    return spec


def _confinement_errors(spec: Path, allowed: list[Path] | None = None) -> list[tuple[str, int]]:
    result = check_paths([spec], allowed_data=allowed or [])
    return [
        (d.code, d.primary_span.line if d.primary_span else 0)
        for d in result.diagnostics
        if d.code == "FM0319"
    ]


@pytest.mark.parametrize(
    "source",
    [
        'csv("../outside/secret.csv", header = true)',
        'csv("../../../../../../../../etc/passwd", header = false)',
        'csv("data/../../outside/*.csv", header = true)',
        'files("data", pattern = "../../outside/*")',
    ],
    ids=["parent", "etc-passwd", "dotdot-inside-glob", "files-pattern"],
)
def test_check_refuses_paths_that_leave_the_project(layout: Path, source: str) -> None:
    spec = _spec(layout / "project", source)
    assert _confinement_errors(spec) == [("FM0319", 2)]


def test_check_refuses_an_absolute_path_at_the_source_with_the_fix(layout: Path) -> None:
    outside = layout / "outside"
    spec = _spec(layout / "project", f'csv("{outside.as_posix()}/secret.csv", header = true)')
    [problem] = [d for d in check_paths([spec]).diagnostics if d.code == "FM0319"]
    span = problem.primary_span
    assert span is not None and (span.line, span.column) == (2, 14)  # the path string
    assert str(outside.resolve() / "secret.csv") in problem.message
    assert problem.help is not None and f"--allow-data {outside.resolve()}" in problem.help
    assert DATA_DIRS_ENV in problem.help


def test_check_refuses_a_symlinked_file_inside_the_data_folder(layout: Path) -> None:
    project = layout / "project"
    (project / "data" / "linked.csv").symlink_to(layout / "outside" / "secret.csv")
    spec = _spec(project, 'csv("data/*.csv", header = true)')
    [problem] = [d for d in check_paths([spec]).diagnostics if d.code == "FM0319"]
    assert "through a symlink" in problem.message


def test_check_sees_hidden_files_that_duckdb_would_read(layout: Path) -> None:
    project = layout / "project"
    (project / "data" / ".hidden.csv").symlink_to(layout / "outside" / "secret.csv")
    assert _confinement_errors(_spec(project, 'csv("data/*.csv", header = true)'))


def test_check_refuses_a_symlinked_folder_inside_a_files_source(layout: Path) -> None:
    project = layout / "project"
    (project / "data" / "more").symlink_to(layout / "outside", target_is_directory=True)
    spec = _spec(project, 'files("data", pattern = "**/*.csv")')
    assert _confinement_errors(spec) == [("FM0319", 2)]


def test_check_follows_let_constants(layout: Path) -> None:
    spec = _spec(layout / "project", "csv(where, header = true)",
                 prelude='let where = "../outside/secret.csv"\n\n')  # fmt: skip
    assert _confinement_errors(spec) == [("FM0319", 4)]


def test_a_folder_outside_is_allowed_by_flag_or_environment_only(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(layout / "project", 'csv("../outside/secret.csv", header = true)')
    assert _confinement_errors(spec, [layout / "outside"]) == []
    monkeypatch.setenv(DATA_DIRS_ENV, os.pathsep.join(["", str(layout / "outside")]))
    assert _confinement_errors(spec) == []


def test_allowing_a_folder_does_not_allow_its_namesake_neighbour(layout: Path) -> None:
    write_csv(layout / "outside-2" / "x.csv", ["id", "body"], [["1", "x"]])
    spec = _spec(layout / "project", 'csv("../outside-2/x.csv", header = true)')
    assert _confinement_errors(spec, [layout / "outside"]) == [("FM0319", 2)]


def test_symlinks_inside_the_project_and_symlinked_projects_are_fine(layout: Path) -> None:
    project = layout / "project"
    (project / "data" / "alias.csv").symlink_to(project / "data" / "ok.csv")
    (layout / "via-link").symlink_to(project, target_is_directory=True)
    spec = _spec(project, 'csv("data/*.csv", header = true)')
    assert _confinement_errors(layout / "via-link" / spec.name) == []


def test_roots_resolve_symlinks_in_the_allowed_folders(layout: Path) -> None:
    (layout / "alias").symlink_to(layout / "outside", target_is_directory=True)
    roots = DataRoots.of([layout / "project"], [layout / "alias"])
    assert source_escapes("../outside/*.csv", layout / "project", roots) == []


def test_cli_check_build_and_plan_take_allow_data(layout: Path) -> None:
    spec = _spec(layout / "project", 'csv("../outside/secret.csv", header = true)')
    runner = CliRunner()
    refused = runner.invoke(cli, ["check", str(spec), "--format", "short"])
    assert refused.exit_code == 1 and "FM0319" in refused.output
    allow = ["--allow-data", str(layout / "outside")]
    assert runner.invoke(cli, ["check", str(spec), *allow]).exit_code == 0
    out = layout / "build"
    assert runner.invoke(cli, ["build", str(spec), "-o", str(out)]).exit_code == 1
    assert not (out / "fm.lock.json").exists()
    assert runner.invoke(cli, ["build", str(spec), "-o", str(out), *allow]).exit_code == 0
    assert runner.invoke(cli, ["plan", str(spec)]).exit_code == 1
    assert runner.invoke(cli, ["plan", str(spec), *allow]).exit_code == 0


def test_cli_run_refuses_before_reading_and_runs_with_allow_data(layout: Path) -> None:
    spec = _spec(layout / "project", 'csv("../outside/secret.csv", header = true)')
    out = layout / "build"
    argv = ["run", str(spec), "-o", str(out), "--until", "data", "--as", TESTER]
    refused = CliRunner().invoke(cli, [*argv, "--format", "short"])
    assert refused.exit_code == 1 and "FM0319" in refused.output
    assert not (out / "run").exists()
    allowed = CliRunner().invoke(cli, [*argv, "--allow-data", str(layout / "outside")])
    assert allowed.exit_code == 0, allowed.output
    assert (out / "run" / "data" / "d" / "all.parquet").is_file()


def test_the_data_stage_refuses_a_file_turned_into_a_symlink_after_the_check(
    layout: Path,
) -> None:
    project = layout / "project"
    spec = _spec(project, 'csv("data/*.csv", header = true)')
    result = check_paths([spec], verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    out = layout / "build"
    build(result, out)
    (project / "data" / "ok.csv").unlink()  # between `fmc check` and the data stage
    (project / "data" / "ok.csv").symlink_to(layout / "outside" / "secret.csv")
    options = RunOptions(out, spec, "data", TESTER, log=lambda _: None)
    with pytest.raises(StageError) as caught:
        run(compile_spec(result), options, spec.read_text(encoding="utf-8"))
    [problem] = caught.value.diagnostics
    assert problem.code == "FM0730" and problem.primary_span is not None
    assert problem.primary_span.line == 2
    assert not (out / "run" / "data").exists(), "refused before anything was read"
    entries = [json.loads(line) for line in (out / "audit.log").read_text().splitlines()]
    last = entries[-1]
    assert (last["stage"], last["decision"]) == ("data:d", "denied")
    assert last["reason"].startswith("FM0730") and last["files"] == ["data/ok.csv"]
    assert verify_log(out / "audit.log").ok


def test_sources_inside_the_project_still_run(layout: Path) -> None:
    spec = _spec(layout / "project", 'csv("data/*.csv", header = true)')
    run_spec(spec, layout / "build", until="data")
    assert (layout / "build" / "run" / "data" / "d" / "all.parquet").is_file()
