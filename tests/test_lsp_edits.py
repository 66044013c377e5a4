"""`fmc lsp` edits through a real LSP client (pytest-lsp over stdio): quick fixes for the
diagnostics that carry one, rename across importing files, and links on imports. Each fix
is applied as an editor would, and the result must check clean."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from tests.test_lsp import INFEASIBLE, SPEC, span_of, where  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")
SERVER = [sys.executable, "-m", "fmlang", "lsp", "--stdio"]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module")
async def client(lsp_client: LanguageClient) -> Any:
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"debounceMs": 50},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


# ---- helpers ------------------------------------------------------------------------------


def doc(uri: str) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


async def open_doc(client: LanguageClient, path: Path, text: str, version: int = 1) -> str:
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    item = types.TextDocumentItem(uri=uri, language_id="fm", version=version, text=text)
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
    return uri


async def published(
    client: LanguageClient,
    uri: str,
    until: Callable[[Sequence[types.Diagnostic]], bool],
    timeout: float = 60.0,
) -> Sequence[types.Diagnostic]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = client.diagnostics.get(uri)
        if found is not None and until(found):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"diagnostics never matched; last: {client.diagnostics.get(uri)}")


def has(code: str) -> Callable[[Sequence[types.Diagnostic]], bool]:
    return lambda found: any(d.code == code for d in found)


def offset(text: str, position: types.Position) -> int:
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: position.line]) + position.character


def applied(text: str, edits: Sequence[types.TextEdit]) -> str:
    """`text` with `edits` applied, as an editor applies a WorkspaceEdit (ASCII text)."""
    ordered = sorted(edits, key=lambda e: offset(text, e.range.start), reverse=True)
    for edit in ordered:
        start, end = offset(text, edit.range.start), offset(text, edit.range.end)
        text = text[:start] + edit.new_text + text[end:]
    return text


async def quick_fixes(
    client: LanguageClient, uri: str, diagnostic: types.Diagnostic
) -> list[types.CodeAction]:
    params = types.CodeActionParams(
        text_document=doc(uri),
        range=diagnostic.range,
        context=types.CodeActionContext(diagnostics=[diagnostic]),
    )
    found = await client.text_document_code_action_async(params)
    actions = [a for a in found or [] if isinstance(a, types.CodeAction)]
    assert all(a.kind == types.CodeActionKind.QuickFix for a in actions)
    return actions


async def fix_clears(
    client: LanguageClient, tmp_path: Path, name: str, broken: str, code: str
) -> str:
    """Open `broken`, apply the one quick fix of its `code` diagnostic; the fixed text (which
    is then checked by the server and must have no diagnostics left)."""
    uri = await open_doc(client, tmp_path / name, broken)
    found = await published(client, uri, has(code))
    (target,) = [d for d in found if d.code == code]
    actions = await quick_fixes(client, uri, target)
    assert len(actions) == 1, [a.title for a in actions]
    action = actions[0]
    assert action.edit is not None and action.edit.changes is not None
    assert list(action.edit.changes) == [uri]
    assert [d.code for d in action.diagnostics or []] == [code]
    fixed = applied(broken, action.edit.changes[uri])
    change = types.TextDocumentContentChangeWholeDocument(text=fixed)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[change],
        )
    )
    assert list(await published(client, uri, lambda d: len(d) == 0)) == []
    return fixed


# ---- quick fixes ----------------------------------------------------------------------------


async def test_did_you_mean_becomes_a_quick_fix(client: LanguageClient, tmp_path: Path) -> None:
    broken = SPEC.replace("rank = 8", "rnak = 8")
    assert await fix_clears(client, tmp_path, "typo.fm", broken, "FM0308") == SPEC


async def test_a_stdlib_name_gets_its_import(client: LanguageClient, tmp_path: Path) -> None:
    broken = SPEC.replace("import std.models.minilm_l6\n", "")
    fixed = await fix_clears(client, tmp_path, "noimport.fm", broken, "FM0401")
    assert fixed.splitlines()[:2] == [
        "import std.hardware.{cpu_2core}",
        "import std.models.minilm_l6",
    ]


async def test_a_unit_split_from_its_number_is_joined(
    client: LanguageClient, tmp_path: Path
) -> None:
    broken = SPEC.replace("memory <= 1GiB", "memory <= 1 GiB")
    assert await fix_clears(client, tmp_path, "space.fm", broken, "FM0303") == SPEC


async def test_the_solvers_bound_change_makes_the_spec_feasible(
    client: LanguageClient, tmp_path: Path
) -> None:
    fixed = await fix_clears(client, tmp_path, "unsat.fm", INFEASIBLE, "FM0601")
    (line,) = [ln for ln in fixed.splitlines() if ln.strip().startswith("throughput")]
    bound = line.split(">=")[1].split("on")[0].strip()
    assert bound.endswith("tok/s") and 0 < float(bound[: -len("tok/s")]) < 3000


async def test_no_quick_fix_where_none_is_known(client: LanguageClient, tmp_path: Path) -> None:
    broken = SPEC.replace("input = CONTENT", "input = XYZZY")
    uri = await open_doc(client, tmp_path / "nofix.fm", broken)
    (target,) = await published(client, uri, lambda d: len(d) > 0)
    assert target.code == "FM0403"
    assert await quick_fixes(client, uri, target) == []


# ---- rename and links -------------------------------------------------------------------------

SHARED = """\
dataset comments {
  source csv("comments.csv")
  schema {
    ID:      string @id
    CONTENT: text
    CLASS:   label[ham, spam] @gold
  }
  split { train 80%, test 20% by hash(ID) }
  grant read, label, train, deploy to "team:ml"
}
"""

MAIN = SPEC.replace(SHARED, 'import "shared.fm"\n')


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "shared.fm").write_text(SHARED, encoding="utf-8")
    (folder / "comments.csv").write_text("ID,CONTENT,CLASS\n1,hello,ham\n", encoding="utf-8")
    return folder


async def test_rename_a_dataset_across_the_importing_file(
    client: LanguageClient, tmp_path: Path
) -> None:
    assert "dataset comments" not in MAIN
    folder = project(tmp_path)
    uri = await open_doc(client, folder / "main.fm", MAIN)
    assert list(await published(client, uri, lambda d: True)) == []
    position = where(MAIN, "comments.test", 0, 3)
    prepared = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(text_document=doc(uri), position=position)
    )
    assert prepared == span_of(MAIN, "comments", MAIN.count("comments") - 1)
    edit = await client.text_document_rename_async(
        types.RenameParams(text_document=doc(uri), position=position, new_name="posts")
    )
    assert edit is not None and edit.changes is not None
    shared_uri = (folder / "shared.fm").as_uri()
    assert set(edit.changes) == {uri, shared_uri}
    renamed_main = applied(MAIN, edit.changes[uri])
    renamed_shared = applied(SHARED, edit.changes[shared_uri])
    assert renamed_shared == SHARED.replace("dataset comments", "dataset posts")
    assert renamed_main == MAIN.replace("comments.", "posts.")
    (folder / "shared.fm").write_text(renamed_shared, encoding="utf-8")
    again = await open_doc(client, folder / "main2.fm", renamed_main)
    assert list(await published(client, again, lambda d: True)) == []


async def test_rename_refuses_columns_clashes_and_non_names(
    client: LanguageClient, tmp_path: Path
) -> None:
    uri = await open_doc(client, tmp_path / "refuse.fm", SPEC)
    await published(client, uri, lambda d: True)
    column = where(SPEC, "CONTENT ~", 0, 2)
    prepared = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(text_document=doc(uri), position=column)
    )
    assert prepared is None
    model = where(SPEC, "spam_filter", 0, 2)
    for new_name, said in (("spam", "already a `labels`"), ("2fast", "is not a name")):
        with pytest.raises(Exception, match=said):
            await client.text_document_rename_async(
                types.RenameParams(text_document=doc(uri), position=model, new_name=new_name)
            )
    edit = await client.text_document_rename_async(
        types.RenameParams(text_document=doc(uri), position=model, new_name="filter")
    )
    assert edit is not None and edit.changes is not None
    assert applied(SPEC, edit.changes[uri]) == SPEC.replace("spam_filter", "filter")


async def test_imports_are_links(client: LanguageClient, tmp_path: Path) -> None:
    from fmlang.paths import stdlib_dir

    folder = project(tmp_path)
    uri = await open_doc(client, folder / "links.fm", MAIN)
    await published(client, uri, lambda d: True)
    found = await client.text_document_document_link_async(
        types.DocumentLinkParams(text_document=doc(uri))
    )
    assert found is not None
    links = {link.target: link.range for link in found}
    assert links[(folder / "shared.fm").as_uri()] == span_of(MAIN, '"shared.fm"')
    models = (stdlib_dir() / "models.fm").resolve().as_uri()
    assert links[models] == span_of(MAIN, "std.models")
    assert (stdlib_dir() / "hardware.fm").resolve().as_uri() in links
