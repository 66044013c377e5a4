"""Requests that reach past the document: a rename edits every file that uses the name,
the open documents as the editor holds them and the other `.fm` files of the workspace as
they are on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.uris import from_fs_path, to_fs_path

from fmlang.lsp.documents import Checker, Snapshot
from fmlang.lsp.rename import RenameRefused, candidate_files, renamable_at, rename

if TYPE_CHECKING:
    from fmlang.lsp.server import FmServer

REQUEST_FAILED = -32803  # LSP's RequestFailed: the client shows the message


async def rename_everywhere(
    server: FmServer, params: types.RenameParams
) -> types.WorkspaceEdit | None:
    uri = params.text_document.uri
    snapshot = await server.scheduler.current(uri)
    if snapshot is None:
        return None
    opened = [s for u in list(server.scheduler.snapshots) if u != uri
              if (s := await server.scheduler.current(u)) is not None]  # fmt: skip
    roots = _roots(server, snapshot)

    def work() -> types.WorkspaceEdit:
        mark = renamable_at(snapshot, params.position)
        if mark is None or mark.target is None:
            raise RenameRefused("nothing renamable here: put the cursor on a declared name")
        skip = {p for doc in (snapshot, *opened) if (p := _path(doc.uri)) is not None}
        on_disk = [_check(path, snapshot.encoding) for path in
                   candidate_files(roots, mark.target.name, skip)]  # fmt: skip
        return rename(snapshot, params.position, params.new_name, [*opened, *on_disk])

    try:
        return await server.scheduler.run(work)
    except RenameRefused as refused:
        raise JsonRpcException(message=str(refused), code=REQUEST_FAILED) from None


def _roots(server: FmServer, snapshot: Snapshot) -> list[Path]:
    """The workspace folders, or the document's own folder when the client sent none."""
    folders = [to_fs_path(f.uri) for f in server.workspace.folders.values()]
    roots = [Path(f) for f in folders if f]
    return roots or [snapshot.base]


def _path(uri: str) -> Path | None:
    path = to_fs_path(uri) if uri.startswith("file:") else None
    return Path(path).resolve() if path else None


def _check(path: Path, encoding: str) -> Snapshot:
    text = path.read_text(encoding="utf-8")
    return Checker().check(from_fs_path(str(path)) or str(path), text, None, encoding)
