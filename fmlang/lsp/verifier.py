"""The verifier's lane: `fmlang.api.analyze` (check and Z3 verification) in a worker process.

Verification can take seconds on a large spec, and the solver's Python side holds the GIL,
so it runs in its own process: the server stays responsive and the checker's diagnostics
keep arriving at typing speed while the solver works on the other core.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from fmlang.diagnostics import Diagnostic, Fix, Label, Severity, Span
from fmlang.lsp.documents import Verified

_caches: dict[str, Any] = {}  # in the worker: one ParseCache per document


def analyze_in_worker(text: str, file: str, base: str) -> dict[str, Any]:
    """Runs in the worker process; returns plain data (diagnostics as their JSON)."""
    from fmlang.api import analyze
    from fmlang.syntax.incremental import ParseCache, reusing_parses

    cache = _caches.setdefault(file, ParseCache())
    with reusing_parses(cache):
        result = analyze(text, file, Path(base))
    report = getattr(result, "report", None)
    rows = list(getattr(report, "constraints", None) or [])
    diagnostics = [
        {**d.to_json(), "fixes": [f.to_json() for f in d.fixes]} for d in result.diagnostics
    ]
    return {"diagnostics": diagnostics, "constraints": rows}


def start_worker(server: int) -> None:
    """In the worker, first: let go of the server's stdin and stdout (the LSP channel; a
    client waits for them to close), and exit as soon as the server is gone."""
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    threading.Thread(target=_exit_with, args=(server,), daemon=True).start()


def _exit_with(server: int) -> None:
    while os.getppid() == server:
        time.sleep(0.5)
    os._exit(0)


def decode(payload: dict[str, Any]) -> Verified:
    diagnostics = tuple(_diagnostic(d) for d in payload["diagnostics"])
    return Verified(diagnostics, tuple(payload["constraints"]))


def _diagnostic(data: dict[str, Any]) -> Diagnostic:
    labels = tuple(
        Label(_span(label["span"]), label["text"], label["primary"]) for label in data["labels"]
    )
    return Diagnostic(
        Severity(data["severity"]),
        data["code"],
        data["message"],
        labels,
        tuple(data["notes"]),
        data["help"],
        tuple(Fix(f["title"], _span(f["span"]), f["text"]) for f in data.get("fixes", ())),
    )


def _span(data: dict[str, Any]) -> Span:
    return Span(data["file"], data["line"], data["column"], data["end_line"], data["end_column"])


class Verifier:
    """A one-process pool, started on first use and restarted if the worker dies."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, text: str, file: str, base: Path) -> Future[dict[str, Any]]:
        try:
            return self._executor().submit(analyze_in_worker, text, file, str(base))
        except BrokenProcessPool:
            self._pool = None
            return self._executor().submit(analyze_in_worker, text, file, str(base))

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
