"""The docs are tested: what docs/*.md and README.md show is what fmc does.

Fenced blocks say how they are checked in their info string, after the language (GitHub
shows only the language):

    ```fm                      a whole spec: `fmc check` (parse, check, Z3) reports no error
    ```fm with=PATH[,PATH]     checked together with the declarations of PATH (a bundled
                               example, from the repository root, or a block above marked
                               `file=PATH`) that the block does not declare itself, as if
                               they were written below it
    ```fm excerpt=PATH         a piece of PATH: every line but blank ones and `# …` elisions
                               occurs in PATH, in this order (PATH itself checks clean)
    ```fm fails=FM0301,FM0303  the errors are exactly these codes (combines with `with=`)
    ```fm file=NAME            also written as NAME into the folder of the console blocks below
    ```console                 each `$ fmc …` line is run; its stdout and stderr, with the
                               folder's path and timings normalised, must be the lines below it
    ```console cwd=DIR         the commands run in a fresh copy of DIR (default: an empty folder)
    ```console patch           the last ```diff block above is applied to that copy first
    ```console edit="F:A=>B"   the text A, once in the copy's file F, is replaced by B first
    ```console timings         measured times (`1.25 s`, `830.4 ms`) are not compared
    ```console skip="REASON"   not run (slow, not deterministic, or not fmc); counted
    ```jsonc lock=SPEC         a trimmed excerpt (`…` for what is left out) of the
                               fm.lock.json `fmc build SPEC` writes; digests by shape,
                               `tools` (the installed versions) not compared

Besides the blocks: the diagnostic-code table of docs/reference.md equals the registry
(`make doc-codes`), every `fmc COMMAND --option` written in the docs exists, every repository
path and relative link they name exists, and every build-time file docs/build-folder.md lists
is written by `fmc build` on a bundled example.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fmlang.api import check_text
from fmlang.diagnostics import Severity
from fmlang.diagnostics.doc_table import REFERENCE, with_table
from fmlang.syntax import ast
from fmlang.syntax.parser import parse

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*(.*)$")
TIMING = re.compile(r"\b\d+\.\d+ ?(?:ms|s)\b")


@dataclass(frozen=True)
class Fence:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    attrs: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _fences(doc: Path) -> list[Fence]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, number = [], 0
    while number < len(lines):
        match = FENCE.match(lines[number])
        if not match:
            number += 1
            continue
        end = number + 1
        while not lines[end].startswith("```"):
            end += 1
        attrs = dict(
            (word.partition("=")[0], word.partition("=")[2]) for word in shlex.split(match[2])
        )
        body = "\n".join(lines[number + 1 : end]) + "\n"
        found.append(Fence(doc, number + 1, match[1], attrs, body))
        number = end + 1
    return found


FENCES = [fence for doc in DOCS for fence in _fences(doc)]
FM_BLOCKS = [f for f in FENCES if f.lang == "fm"]
CONSOLE_BLOCKS = [f for f in FENCES if f.lang == "console"]


# ---- fm blocks ----------------------------------------------------------------------------


def _key(item: ast.Item) -> tuple[str, str] | None:
    """What a top-level item declares: a name, or the target of `constraints`/`deploy`."""
    if isinstance(item, ast.Constraints):
        return ("constraints", item.target.name)
    if isinstance(item, ast.Block) and item.kind == "deploy":
        return ("deploy", item.name.name)
    if isinstance(item, ast.Dataset | ast.Labels | ast.Let | ast.Block):
        return ("name", item.name.name)
    return None


def _context(fence: Fence, name: str) -> tuple[str, Path]:
    """The text `with=NAME` names, and the folder its imports resolve from: a block above
    in the same doc marked `file=NAME`, else a file of the repository."""
    for block in FM_BLOCKS:
        if block.doc == fence.doc and block.line < fence.line and block.attrs.get("file") == name:
            return block.text, fence.doc.parent
    path = ROOT / name
    return path.read_text(encoding="utf-8"), path.parent


def _with_context(text: str, source: str) -> str:
    """The block, then the context without the items the block declares again."""
    mine = parse(text).module
    assert mine is not None, "the block does not parse"
    keys = {_key(item) for item in mine.items} - {None}
    theirs = parse(source).module
    assert theirs is not None
    kept = [source[i.span.start : i.span.end] for i in theirs.items if _key(i) not in keys]
    return text + "\n" + "\n".join(kept) + "\n"


def _errors(text: str, where: str, base: Path) -> tuple[list[str], str]:
    result = check_text(text, where, base=base, verify=True)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    shown = "\n".join(
        f"{d.code} {d.primary_span and d.primary_span.line}: {d.message}" for d in errors
    )
    return sorted({d.code for d in errors}), shown


def _check_excerpt(fence: Fence) -> None:
    path = ROOT / fence.attrs["excerpt"]
    whole = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
    position = 0
    for line in fence.text.splitlines():
        if not line.strip() or line.strip().startswith("# …"):
            continue
        try:
            position = whole.index(line.rstrip(), position) + 1
        except ValueError:
            pytest.fail(f"{fence.where}: not in {path.name} (or out of order): {line!r}")
    codes, shown = _errors(path.read_text(encoding="utf-8"), str(path), path.parent)
    assert not codes, shown


@pytest.mark.parametrize("fence", FM_BLOCKS, ids=lambda f: f.where)
def test_fm_block_checks_as_documented(fence: Fence) -> None:
    if "excerpt" in fence.attrs:
        _check_excerpt(fence)
        return
    text, base = fence.text, fence.doc.parent
    if "with" in fence.attrs:
        for name in reversed(fence.attrs["with"].split(",")):
            source, base = _context(fence, name)
            text = _with_context(text, source)
    codes, shown = _errors(text, fence.where, base)
    expected = sorted(c for c in fence.attrs.get("fails", "").split(",") if c)
    assert codes == expected, f"{fence.where}: errors {codes}, documented {expected}\n{shown}"


@pytest.mark.parametrize(
    ("lang", "known"),
    [
        ("fm", {"with", "excerpt", "fails", "file"}),
        ("console", {"cwd", "patch", "edit", "timings", "skip"}),
    ],
)
def test_block_attributes_are_known(lang: str, known: set[str]) -> None:
    odd = [
        f"{f.where}: {sorted(f.attrs)}" for f in FENCES if f.lang == lang and set(f.attrs) - known
    ]
    assert not odd, f"unknown {lang} block attributes (known: {sorted(known)}): {odd}"


# ---- console blocks -----------------------------------------------------------------------


def _commands(fence: Fence) -> list[tuple[str, list[str]]]:
    """Each `$ command` with the output lines written below it."""
    commands: list[tuple[str, list[str]]] = []
    for line in fence.text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"{fence.where}: output before the first `$` line"
            commands[-1][1].append(line)
    return commands


def _apply_diff(diff: str, folder: Path) -> None:
    """A unified diff (`--- a`, `+++ b`, hunks of `-`, `+` and ` ` lines) applied in place."""
    hunk = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")
    edited: dict[Path, list[str]] = {}
    lines: list[str] = []
    at = shift = 0
    for row in diff.splitlines():
        if row.startswith("+++ "):
            target = folder / row[4:].strip()
            lines = edited.setdefault(target, target.read_text(encoding="utf-8").splitlines())
            shift = 0
        elif match := hunk.match(row):
            at = int(match[1]) - 1 + shift
        elif row.startswith("+"):
            lines.insert(at, row[1:])
            at, shift = at + 1, shift + 1
        elif row.startswith("-") and not row.startswith("--- "):
            assert lines[at] == row[1:], f"the diff does not apply at line {at + 1}: {row!r}"
            del lines[at]
            shift -= 1
        elif row.startswith(" "):
            at += 1
    for path, text in edited.items():
        path.write_text("\n".join(text) + "\n", encoding="utf-8")


def _normalise(text: str, folder: Path, timings: bool) -> list[str]:
    text = text.replace(str(folder) + os.sep, "").replace(str(folder), ".")
    lines = [line.rstrip() for line in text.splitlines()]
    if timings:
        lines = [TIMING.sub("<time>", line) for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _fmc(command: str, cwd: Path) -> str:
    words = shlex.split(command)
    assert words[0] == "fmc", f"only fmc commands run here; mark the block skip: {command}"
    env = {k: v for k, v in os.environ.items() if k != "FMC_DEBUG"}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="100", PYTHONIOENCODING="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fmlang", *words[1:]],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=env,
        timeout=60,
    )
    return done.stdout + done.stderr


def _prepare(fence: Fence, folder: Path) -> None:
    """The folder the block's commands run in: DIR copied, the doc's files, the diff."""
    if "cwd" in fence.attrs:
        shutil.copytree(ROOT / fence.attrs["cwd"], folder, dirs_exist_ok=True)
    above = [f for f in FENCES if f.doc == fence.doc and f.line < fence.line]
    for block in above:
        if block.lang == "fm" and "file" in block.attrs:
            (folder / block.attrs["file"]).write_text(block.text, encoding="utf-8")
    if "edit" in fence.attrs:
        name, _, change = fence.attrs["edit"].partition(":")
        old, _, new = change.partition("=>")
        text = (folder / name).read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{fence.where}: `{old}` is not once in {name}"
        (folder / name).write_text(text.replace(old, new), encoding="utf-8")
    if "patch" in fence.attrs:
        diffs = [f for f in above if f.lang == "diff"]
        assert diffs, f"{fence.where}: `patch` without a ```diff block above"
        _apply_diff(diffs[-1].text, folder)


RUN = [f for f in CONSOLE_BLOCKS if "skip" not in f.attrs]


@pytest.mark.parametrize("fence", RUN, ids=lambda f: f.where)
def test_console_block_prints_what_it_shows(fence: Fence, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    _prepare(fence, folder)
    for command, shown in _commands(fence):
        timings = "timings" in fence.attrs
        printed = _normalise(_fmc(command, folder), folder, timings)
        expected = _normalise("\n".join(shown), folder, timings)
        assert printed == expected, f"{fence.where}: `{command}` printed:\n" + "\n".join(printed)


def test_skipped_console_blocks_are_counted_and_give_a_reason() -> None:
    skipped = [f for f in CONSOLE_BLOCKS if "skip" in f.attrs]
    assert all(f.attrs["skip"].strip() for f in skipped), "a skip says why"
    # Raise these counts only with a reason in each new block: nothing is skipped silently.
    assert len(RUN) >= 6, [f.where for f in RUN]
    assert len(skipped) <= 4, [f"{f.where}: {f.attrs['skip']}" for f in skipped]
    fmc_in_skipped = [
        f.where for f in skipped if re.search(r"^\$ fmc (check|explain|fmt)", f.text, re.M)
    ]
    assert not fmc_in_skipped, f"cheap commands are run, not skipped: {fmc_in_skipped}"


# ---- the fm.lock.json excerpt --------------------------------------------------------------

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _jsonc(text: str) -> object:
    """A trimmed JSON excerpt: `…` stands for left-out members or items."""
    text = re.sub(r"^\s*…,?\s*\n", "", text, flags=re.M)
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


def _missing(shown: object, real: object, where: str = "") -> list[str]:
    """What the excerpt shows that the real document does not hold (digests by shape)."""
    if isinstance(shown, dict) and isinstance(real, dict):
        return [
            problem
            for key, value in shown.items()
            for problem in (
                _missing(value, real[key], f"{where}.{key}") if key in real else [f"{where}.{key}"]
            )
        ]
    if (
        isinstance(shown, list)
        and isinstance(real, list)
        and any(isinstance(item, dict) for item in shown)
    ):
        return [f"{where}[]" for item in shown if all(_missing(item, r) for r in real)]
    if isinstance(shown, str) and isinstance(real, str):
        return [] if DIGEST.sub("sha256:…", shown) == DIGEST.sub("sha256:…", real) else [where]
    return [] if shown == real else [f"{where}: {shown!r} is {real!r}"]


LOCK_EXCERPTS = [f for f in FENCES if f.lang == "jsonc" and "lock" in f.attrs]


@pytest.mark.parametrize("fence", LOCK_EXCERPTS, ids=lambda f: f.where)
def test_lock_file_excerpt_is_real(fence: Fence, tmp_path: Path) -> None:
    spec = ROOT / fence.attrs["lock"]
    shutil.copytree(spec.parent, tmp_path / "project")
    done = CliRunner().invoke(
        cli_group(), ["build", str(tmp_path / "project" / spec.name), "-o", str(tmp_path / "out")]
    )
    assert done.exit_code == 0, done.output
    real = json.loads((tmp_path / "out" / "fm.lock.json").read_text(encoding="utf-8"))
    shown = _jsonc(fence.text)
    assert isinstance(shown, dict)
    shown.pop("tools", None)  # the versions installed where the test runs
    assert not _missing(shown, real), f"{fence.where}: not in fm.lock.json: {_missing(shown, real)}"


def test_lock_file_excerpts_are_tested() -> None:
    assert LOCK_EXCERPTS, "the tutorial's fm.lock.json excerpt is marked ```jsonc lock=SPEC"


# ---- the diagnostic-code table ------------------------------------------------------------


def test_code_table_is_generated_from_the_registry() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert with_table(text) == text, "docs/reference.md's code table is stale: make doc-codes"


# ---- documented options, paths and files --------------------------------------------------

INLINE = re.compile(r"`(fmc [^`]+)`")
CONSOLE_FMC = re.compile(r"^\$ (fmc .+)$", re.M)


def _documented_invocations() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for pattern in (INLINE, CONSOLE_FMC):
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{doc.relative_to(ROOT)}:{line}", match[1]))
    return found


def cli_group() -> click.Group:
    from fmlang.cli.main import cli

    return cli


def _options_of(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        names.update(param.opts + param.secondary_opts)
    return names


def _problems(invocation: str) -> list[str]:
    from fmlang.cli.main import cli

    command: click.Command = cli
    path = ["fmc"]
    problems = []
    for word in invocation.split()[1:]:
        word = word.strip("[](){}…,.;:")
        if isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", word):
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"`{' '.join(path)} {word}`: no such command")
                break
            command, path = sub, [*path, word]
        elif re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?(\|.*)?", word):
            for option in re.split(r"\|", word):
                name = option.partition("=")[0]
                if name.startswith("-") and name not in _options_of(command):
                    problems.append(f"`{' '.join(path)}` has no option `{name}`")
    return problems


def test_documented_commands_and_options_exist() -> None:
    invocations = _documented_invocations()
    assert len(invocations) > 50
    wrong = [f"{where}: {p}" for where, text in invocations for p in _problems(text)]
    assert not wrong, "\n".join(wrong)


def _every_fmc_option() -> set[str]:
    from fmlang.cli.main import cli

    found: set[str] = set()
    commands: list[click.Command] = [cli]
    while commands:
        command = commands.pop()
        found |= _options_of(command)
        if isinstance(command, click.Group):
            commands.extend(command.commands.values())
    return found


def test_documented_options_exist_somewhere() -> None:
    """A `--option` written outside an `fmc …` span belongs to some fmc command, or to a
    script or tool fmc drives (a benchmark, `python -m fmlang…`, vLLM's arguments)."""
    known = _every_fmc_option()
    sources = [ROOT / "benchmarks", ROOT / "fmlang", ROOT / "tests" / "e2e"]
    python = "\n".join(p.read_text(encoding="utf-8") for d in sources for p in d.rglob("*.py"))
    unknown = []
    for doc in DOCS:
        for span in re.findall(r"`([^`\n]+)`", doc.read_text(encoding="utf-8")):
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span):
                if option not in known and f'"{option}"' not in python:
                    unknown.append(f"{doc.relative_to(ROOT)}: {option} in `{span}`")
    assert not unknown, "\n".join(unknown)


LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)")
REPO_PATH = re.compile(
    r"`((?:fmlang|benchmarks|examples|stdlib|grammar|editors|tests|docs)/[\w./-]*\w)`"
)


def test_documented_paths_exist() -> None:
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)}: link {target}")
        for target in REPO_PATH.findall(text):
            if "<" not in target and not any(ROOT.glob(target)):
                missing.append(f"{doc.relative_to(ROOT)}: path {target}")
    assert not missing, "\n".join(missing)


# The build folder's layout lists what `fmc run`, `fmc serve` and people write too; these are
# the entries `fmc build` does not write, each with who does.
NOT_WRITTEN_BY_BUILD = {
    "run.lock": "held by `fmc run` while it runs",
    "weights/<base model>/": "copied by the user before serving from a container",
    "run/": "`fmc run`",
    "registry/": "`fmc run` registers versions",
    "audit.log": "`fmc run` appends to it",
    "audit.log.head": "`fmc run`",
    "audit.log.torn": "a later append",
    "audit.log.lock": "whoever appends",
}


def _layout_entries() -> list[str]:
    """The top-level entries (two spaces in) of the layout block that starts with `DIR/`."""
    fences = _fences(ROOT / "docs" / "build-folder.md")
    layout = next(f for f in fences if f.text.startswith("DIR/"))
    rows = [line for line in layout.text.splitlines() if re.match(r"^  \S", line)]
    return [re.split(r"\s{2,}", row.strip())[0] for row in rows]


def _pattern(entry: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in re.split(r"<[^>]+>", entry)]
    return re.compile("[^/]+".join(parts) + ("$" if not entry.endswith("/") else ""))


@pytest.fixture(scope="module")
def built_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every file `fmc build` writes for the bundled examples; spam.fm with an `apply_to`."""
    from fmlang.api import check_paths
    from fmlang.cli.main import cli

    work = tmp_path_factory.mktemp("docs-build")
    shutil.copytree(ROOT / "examples", work / "examples")
    spam = work / "examples" / "youtube_spam" / "spam.fm"
    text = spam.read_text(encoding="utf-8")
    spam.write_text(
        text.replace("  model majority", "  apply_to [comments.test]\n  model majority")
    )
    assert check_paths([spam]).ok
    files: set[str] = set()
    specs = ["youtube_spam/spam.fm", "support_assistant/assistant.fm", "adapter_merge/merge.fm"]
    for number, spec in enumerate(specs):
        out = work / f"build{number}"
        done = CliRunner().invoke(cli, ["build", str(work / "examples" / spec), "-o", str(out)])
        assert done.exit_code == 0, done.output
        files |= {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    return files


def test_build_folder_files_are_written_by_fmc_build(built_files: set[str]) -> None:
    entries = _layout_entries()
    assert "fm.lock.json" in entries and "verify.json" in entries
    unwritten = [
        entry
        for entry in entries
        if entry not in NOT_WRITTEN_BY_BUILD
        and not any(_pattern(entry).match(path) for path in built_files)
    ]
    assert not unwritten, f"docs/build-folder.md lists files `fmc build` never writes: {unwritten}"
    undocumented = sorted(
        path for path in built_files if not any(_pattern(entry).match(path) for entry in entries)
    )
    assert not undocumented, f"`fmc build` writes files docs/build-folder.md omits: {undocumented}"


def test_tutorial_states_the_knobs_the_solver_chooses(tmp_path: Path) -> None:
    """Section 6 says which rank and batch the solver picks for the example: `fmc plan`'s."""
    tutorial = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    plan = json.loads(_fmc("fmc plan --format json spam.fm", ROOT / "examples" / "youtube_spam"))
    rank, batch = plan["knobs"]["spam_filter.rank"], plan["knobs"]["spam_filter.train.batch"]
    assert rank == max(4, 8, 16) and re.search(r"picks\s+the largest of the list", tutorial)
    assert f"({rank} here;" in tutorial
    assert f"optimizer steps: {batch}" in tutorial
