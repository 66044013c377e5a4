"""The small public API the CLI and the language server call."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlang import __version__
from fmlang.atomic import json_text, write_json_atomic, write_text_atomic
from fmlang.check import Program, load, load_text, run_passes
from fmlang.check.datasets import check_source_confinement
from fmlang.check.forget import check_forget_files
from fmlang.diagnostics import Diagnostic, Severity
from fmlang.files import DataRoots, file_sha256, source_files, source_pattern

if TYPE_CHECKING:
    from fmlang.ir.nodes import Spec
    from fmlang.verify.report import VerifyReport


@dataclass
class CheckResult:
    program: Program
    report: VerifyReport | None = None
    spec: Spec | None = None

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return sorted(self.program.sink.items, key=_order)

    @property
    def ok(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.program.sink.items)

    @property
    def sources(self) -> dict[str, str]:
        return self.program.sources


def _order(d: Diagnostic) -> tuple[str, int, int]:
    span = d.primary_span
    return (span.file, span.line, span.column) if span else ("", 0, 0)


def check_paths(
    paths: list[Path],
    verify: bool = False,
    allowed_data: Sequence[str | Path] = (),
    data: bool = False,
) -> CheckResult:
    """Check the spec files; every source must read inside the folder of one of `paths`
    (the project), a folder in `allowed_data` (`--allow-data`) or in FMC_DATA_DIRS. With
    `data` (`fmc check`, `fmc run`), each confined source must also match files whose
    headers and metadata hold the schema's columns (FM0388-FM0390), once the spec itself
    checks clean (a schema with errors is not compared with data)."""
    program = run_passes(load(paths))
    # realpath, not resolve(): a symlink loop is the loader's FM0001, not a crash here
    roots = DataRoots.of([Path(os.path.realpath(p)).parent for p in paths], allowed_data)
    clean = not any(d.severity is Severity.ERROR for d in program.sink.items)
    check_source_confinement(program, roots, look_at_data=data and clean)
    check_forget_files(program, roots)
    result = CheckResult(program)
    if verify:
        verify_result(result)
    if verify and data and result.report is not None and result.spec is not None:
        from fmlang.verify.gate_rows import small_gates

        entry = Path(program.roots[0]).resolve().parent if program.roots else Path()
        small = small_gates(result.spec, entry, roots)  # the sources are confined: it checked
        result.report.diagnostics += small
        program.sink.extend(small)
    return result


def check_text(
    text: str,
    file: str = "<input>",
    base: Path | None = None,
    verify: bool = False,
    allowed_data: Sequence[str | Path] | None = None,
) -> CheckResult:
    """Check a document held in memory, its imports resolved under `base`. Sources are
    confined to `base` (and `allowed_data`, FMC_DATA_DIRS) only when `allowed_data` is
    given: the editor checks on every keystroke and does not walk the data folders."""
    folder = base or Path.cwd()
    program = run_passes(load_text(text, file, folder))
    roots = DataRoots.of([folder], allowed_data or ())
    if allowed_data is not None:
        check_source_confinement(program, roots, {file: folder.resolve()})
    check_forget_files(program, roots, {file: folder.resolve()})  # small: read every time
    result = CheckResult(program)
    if verify:
        verify_result(result)
    return result


def analyze(text: str, file: str = "<input>", base: Path | None = None) -> CheckResult:
    """Everything an editor shows for one document: parse, check and (when the spec checks
    clean) the static verification's diagnostics. No torch or backend imports."""
    return check_text(text, file, base, verify=True)


def verify_result(result: CheckResult) -> VerifyReport | None:
    """Run the Z3 verification on a spec that checks clean; its diagnostics join the
    result's. None when the spec has errors (nothing sound to verify)."""
    if not result.ok:
        return None
    from fmlang.verify import verify
    from fmlang.verify.selection import drop, per_candidate_rows

    # `base auto in [...]`: the candidates that cannot meet the static constraints go first
    dropped = drop(compile_spec(result), result.program)
    result.spec = dropped.spec
    report = verify(result.spec, result.program)
    report.diagnostics[:0] = dropped.diagnostics
    report.feasible = report.feasible and not any(
        d.severity is Severity.ERROR for d in dropped.diagnostics
    )
    report.selections = dropped.selections
    per_candidate_rows(report.constraints, result.spec)
    result.program.sink.extend(report.diagnostics)
    result.report = report
    return report


def compile_spec(result: CheckResult) -> Spec:
    from fmlang.ir.build import build_spec

    if result.spec is None:
        result.spec = build_spec(result.program)
    return result.spec


def lock_document(result: CheckResult, spec: Spec) -> dict[str, Any]:
    """`fm.lock.json`: the resolved IR, a content hash of every input, tool versions."""
    import lark
    import pydantic

    entry = Path(result.program.roots[0]).resolve().parent if result.program.roots else Path()
    inputs = {
        _lock_key(path, source.stdlib, entry): "sha256:"
        + hashlib.sha256(source.text.encode("utf-8")).hexdigest()
        for path, source in result.program.files.items()
    }
    inputs.update(data_hashes(spec, entry))
    return {
        "schema_version": "1",
        "fmc_version": __version__,
        "tools": {
            "python": platform.python_version(),
            "lark": lark.__version__,
            "pydantic": pydantic.VERSION,
        },
        "inputs": inputs,
        "ir": spec.model_dump(mode="json"),
    }


def data_hashes(spec: Spec, entry: Path) -> dict[str, str]:
    """A sha256 of every file each dataset's source matches (folders: every file inside),
    and of its forget file, keyed relative to the entry spec's folder; `missing` where the
    source matches nothing."""
    out: dict[str, str] = {}
    for dataset in spec.datasets:
        if dataset.source is None:
            continue
        spec_dir = (entry / dataset.file).parent
        files = source_files(dataset, spec_dir)
        if not files:
            key = Path(os.path.relpath(source_pattern(dataset, spec_dir), entry)).as_posix()
            out[key] = "missing"
        for file in files:
            out[Path(os.path.relpath(file, entry)).as_posix()] = "sha256:" + file_sha256(file)
        if dataset.forget is not None:  # the text its requests were read from
            forget = os.path.relpath(spec_dir / dataset.forget.path, entry)
            out[Path(forget).as_posix()] = "sha256:" + dataset.forget.sha256
    return out


def _lock_key(path: str, stdlib: bool, entry: Path) -> str:
    """Input paths relative to the entry spec's folder, so the lock does not depend on the
    directory `fmc build` ran from; stdlib files keep their `<std>/…` names."""
    if stdlib:
        return path
    return Path(os.path.relpath(Path(path).resolve(), entry)).as_posix()


def build(result: CheckResult, out_dir: Path, only_if_stale: bool = False) -> list[Path]:
    """Write the build folder's artifacts; later stages add theirs beside the lock file.

    The lock file is written last and records a sha256 of every artifact, so a build cut
    short is stale. With `only_if_stale` (what `fmc run` does), a folder whose lock matches
    the spec, its inputs and what this fmc would write, and whose artifacts all exist, is left
    as it is: the build folder is what runs, hand edits included."""
    from fmlang.lower.artifacts import lower_artifacts

    spec = compile_spec(result)
    lock_path = out_dir / "fm.lock.json"
    lock = lock_document(result, spec)
    files: dict[str, str] = {}
    if result.report is not None:
        files["verify.json"] = json_text(result.report.to_json())
    knobs = dict(result.report.knobs) if result.report is not None else {}
    constraints = result.report.constraints if result.report is not None else []
    files.update(lower_artifacts(spec, knobs, constraints))
    # What runs (verify.json is a report, and names files as fmc was invoked).
    lock["artifacts"] = {
        k: _digest(v.encode("utf-8")) for k, v in sorted(files.items()) if k != "verify.json"
    }
    if only_if_stale and _current(lock_path, lock, out_dir):
        return []
    written = []
    for relative, text in sorted(files.items()):
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        written.append(path)
    write_json_atomic(lock_path, lock)
    return [lock_path, *written]


def _current(lock_path: Path, lock: dict[str, Any], out_dir: Path) -> bool:
    """The folder was built from these inputs by an fmc that lowers them the same way (the
    lock's artifact digests equal what would be written now), and every artifact is there.
    An artifact edited since is still current: the lock records what fmc wrote."""
    try:
        previous = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if previous != json.loads(json_text(lock)):
        return False
    return all((out_dir / relative).is_file() for relative in lock["artifacts"])


def edited_artifacts(out_dir: Path) -> list[str]:
    """Artifacts whose content differs from what the lock recorded (edited by hand)."""
    try:
        artifacts = json.loads((out_dir / "fm.lock.json").read_text(encoding="utf-8"))["artifacts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [
        relative
        for relative, digest in sorted(artifacts.items())
        if (out_dir / relative).is_file() and _digest((out_dir / relative).read_bytes()) != digest
    ]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
