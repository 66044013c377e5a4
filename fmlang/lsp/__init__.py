"""`fmc lsp`: the language server (pygls over stdio).

`server.py` wires the features to LSP requests; each feature is a small module that reads a
`Snapshot` (one analysed version of a document, `documents.py`):

- diagnostics (`diagnostics.py`), scheduled by `scheduler.py`: the checker's diagnostics
  first, then the verifier's, which `fmlang.api.analyze` adds (run in a worker process);
- hover (`hover.py`), completion (`completion.py`, `cursor.py`), go-to-definition and
  find-references (`navigation.py`, over the occurrences in `index.py`), document symbols
  (`symbols.py`), semantic tokens (`tokens.py`) and formatting (`formatting.py`);
- quick fixes (`actions.py`, from the fixes `fixes.py` reads off each diagnostic), rename
  (`rename.py`; across the workspace's files in `workspace.py`) and import links (`links.py`).

Nothing here imports torch, transformers, peft or duckdb.
"""
