"""`fmc lsp` keeps torch and the backends out: the server, driven through every feature in a
fresh interpreter, has imported none of them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pygls")

SPEC = (Path(__file__).parent.parent / "examples" / "youtube_spam" / "spam.fm").read_text()


HEAVY = ("torch", "transformers", "peft", "duckdb")
PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from lsprotocol import types
    from fmlang.lsp import actions, completion, hover, links, navigation, rename, symbols, tokens
    from fmlang.lsp.server import build_server

    server = build_server()
    uri = "untitled:probe"
    text = sys.stdin.read()
    server.scheduler.verifier = None
    async def probe():
        server.scheduler.changed(uri, text, 1)
        snap = await server.scheduler.current(uri)
        for line in range(len(text.splitlines())):
            for char in range(0, 40, 3):
                position = types.Position(line, char)
                hover.hover(snap, position)
                navigation.definition(snap, position)
                rename.prepare_rename(snap, position)
                actions.code_actions(snap, types.Range(position, position))
        symbols.document_symbols(snap)
        links.document_links(snap)
        tokens.semantic_tokens(snap)
        completion.complete(text, snap.lines(), types.Position(3, 2), snap)
        server.scheduler.shutdown()
    asyncio.run(probe())
    print(sorted(name for name in sys.modules if name.split(".")[0] in {heavy}))
    """
)


def test_the_server_imports_no_backend() -> None:
    probe = PROBE.replace("{heavy}", repr(set(HEAVY)))
    done = subprocess.run(
        [sys.executable, "-c", probe], input=SPEC, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
