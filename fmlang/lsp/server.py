"""The language server: LSP requests → the feature modules, over stdio (`fmc lsp`).

Initialization options (all optional): `{"debounceMs": 100, "verify": true}`; `verify`
false keeps the Z3 verifier's lane off (the checker's diagnostics still come).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from fmlang import __version__
from fmlang.lsp.actions import code_actions
from fmlang.lsp.completion import complete
from fmlang.lsp.diagnostics import to_lsp
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.formatting import format_document
from fmlang.lsp.hover import hover
from fmlang.lsp.links import document_links
from fmlang.lsp.navigation import definition, references
from fmlang.lsp.positions import LineIndex
from fmlang.lsp.rename import prepare_rename
from fmlang.lsp.scheduler import DEBOUNCE_SECONDS, Scheduler
from fmlang.lsp.symbols import document_symbols
from fmlang.lsp.tokens import LEGEND, semantic_tokens
from fmlang.lsp.workspace import rename_everywhere
from fmlang.syntax.incremental import reusing_parses

T = TypeVar("T")
TRIGGERS = [".", "@", ":", "=", "(", "[", ",", " ", ">"]


class FmServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("fmc", __version__)
        self.scheduler = Scheduler(self.publish, self.encoding)

    def encoding(self) -> str:
        try:
            negotiated = self.workspace.position_encoding
        except RuntimeError:  # not initialized (the server is driven directly, as in tests)
            negotiated = None
        return str(negotiated or types.PositionEncodingKind.Utf16)

    def publish(self, snapshot: Snapshot) -> None:
        params = types.PublishDiagnosticsParams(
            uri=snapshot.uri, diagnostics=to_lsp(snapshot), version=snapshot.version
        )
        self.text_document_publish_diagnostics(params)

    def text(self, uri: str) -> str:
        return self.workspace.get_text_document(uri).source

    async def on_snapshot(self, uri: str, work: Callable[[Snapshot], T], empty: T) -> T:
        """Run `work` on the document's current snapshot, on the checker's thread."""
        snapshot = await self.scheduler.current(uri)
        if snapshot is None:
            return empty
        return await self.scheduler.run(lambda: work(snapshot))


def build_server() -> FmServer:
    server = FmServer()
    _documents(server)
    _requests(server)
    _edits(server)
    return server


def _documents(server: FmServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(params: types.InitializeParams) -> None:
        options: dict[str, Any] = params.initialization_options or {}
        server.scheduler.debounce = float(options.get("debounceMs", DEBOUNCE_SECONDS * 1000)) / 1000
        if options.get("verify") is False:
            server.scheduler.verifier = None

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        document = params.text_document
        server.scheduler.changed(document.uri, document.text, document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        server.scheduler.changed(uri, server.text(uri), params.text_document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        server.scheduler.closed(uri)
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, []))

    @server.feature(types.SHUTDOWN)
    def shutdown(params: None) -> None:
        server.scheduler.shutdown()


def _requests(server: FmServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def on_hover(params: types.HoverParams) -> types.Hover | None:
        return await server.on_snapshot(
            params.text_document.uri, lambda snap: hover(snap, params.position), None
        )

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    async def on_definition(params: types.DefinitionParams) -> list[types.Location]:
        return await server.on_snapshot(
            params.text_document.uri, lambda snap: definition(snap, params.position), []
        )

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    async def on_references(params: types.ReferenceParams) -> list[types.Location]:
        declaration = params.context.include_declaration
        return await server.on_snapshot(
            params.text_document.uri,
            lambda snap: references(snap, params.position, declaration),
            [],
        )

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def on_symbols(params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
        return await server.on_snapshot(params.text_document.uri, document_symbols, [])

    @server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL, LEGEND)
    async def on_tokens(params: types.SemanticTokensParams) -> types.SemanticTokens:
        return await server.on_snapshot(
            params.text_document.uri, semantic_tokens, types.SemanticTokens(data=[])
        )

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=TRIGGERS)
    )
    def on_completion(params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        text = server.text(uri)
        lines = LineIndex(text, server.encoding())
        parsed = server.scheduler.parsed.get(uri)
        items = complete(text, lines, params.position, parsed)
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    async def on_format(params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
        uri = params.text_document.uri
        text = server.text(uri)
        lines = LineIndex(text, server.encoding())
        scheduler = server.scheduler
        file = scheduler.snapshots[uri].file if uri in scheduler.snapshots else uri

        def work() -> list[types.TextEdit] | None:
            with reusing_parses(scheduler.checker.cache(uri)):
                return format_document(text, file, lines)

        return await scheduler.run(work)


def _edits(server: FmServer) -> None:
    """Quick fixes, rename and import links."""

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
    )
    async def on_code_action(params: types.CodeActionParams) -> list[types.CodeAction]:
        return await server.on_snapshot(
            params.text_document.uri, lambda snap: code_actions(snap, params.range), []
        )

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    async def on_prepare_rename(params: types.PrepareRenameParams) -> types.Range | None:
        return await server.on_snapshot(
            params.text_document.uri, lambda snap: prepare_rename(snap, params.position), None
        )

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    async def on_rename(params: types.RenameParams) -> types.WorkspaceEdit | None:
        return await rename_everywhere(server, params)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_LINK, types.DocumentLinkOptions())
    async def on_links(params: types.DocumentLinkParams) -> list[types.DocumentLink]:
        return await server.on_snapshot(params.text_document.uri, document_links, [])


def main() -> None:
    """Serve LSP on stdin/stdout until the client says `exit`."""
    logging.basicConfig(level=logging.WARNING, format="fmc lsp: %(levelname)s %(message)s")
    server = build_server()
    try:
        server.start_io()
    finally:
        server.scheduler.shutdown()


if __name__ == "__main__":
    main()
