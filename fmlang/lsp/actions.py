"""Code actions: a quick fix for every fix a diagnostic offers (`fixes.py`), for the
diagnostics whose range meets the requested one."""

from __future__ import annotations

from lsprotocol import types

from fmlang.lsp.diagnostics import convert
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.fixes import fixes_for


def code_actions(snapshot: Snapshot, wanted: types.Range) -> list[types.CodeAction]:
    lines = snapshot.lines()
    actions = []
    for diagnostic in snapshot.diagnostics:
        shown = convert(snapshot, diagnostic)
        if not _meets(shown.range, wanted):
            continue
        for index, fix in enumerate(fixes_for(diagnostic, snapshot.file, snapshot.text)):
            edit = types.TextEdit(range=lines.range(fix.span), new_text=fix.text)
            actions.append(
                types.CodeAction(
                    title=fix.title,
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=[shown],
                    is_preferred=index == 0,
                    edit=types.WorkspaceEdit(changes={snapshot.uri: [edit]}),
                )
            )
    return actions


def _meets(a: types.Range, b: types.Range) -> bool:
    def key(p: types.Position) -> tuple[int, int]:
        return (p.line, p.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)
