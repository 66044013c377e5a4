"""How fast `fmc lsp` answers an edit to a 5,000-line spec with diagnostics.

A real LSP client starts `python -m fmlang lsp` over stdio, opens the generated spec of
`check_speed.py`, then sends edits (a changed bound, a typo that makes an error and its fix,
a new line that moves everything below, a changed string) as incremental `didChange`
notifications, each `--gap` seconds after the last. Each edit is timed from sending the
change to receiving the `publishDiagnostics` for that version: the checker's diagnostics,
debounce included (an edit after a quiet spell is checked at once). The verifier's
diagnostics follow in a second publish; their latency is printed too. The baseline, in the
same run and process: the bare `fmlang.api.analyze` of the same text (parse, check, verify),
and `check_text` (parse and check). Target (issue 7): diagnostics within 300 ms.

    .venv/bin/python benchmarks/lsp_speed.py [--lines 5000] [--edits 12] [--gap 0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from check_speed import generate
from lsprotocol import types
from pygls.lsp.client import LanguageClient

TARGET_MS = 300.0


@dataclass
class Published:
    """Arrival times of each version's publishes: the checker's first, the verifier's next."""

    times: dict[int, list[float]] = field(default_factory=dict)
    codes: dict[int, list[str]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, params: types.PublishDiagnosticsParams) -> None:
        version = params.version or 0
        self.times.setdefault(version, []).append(time.perf_counter())
        self.codes.setdefault(version, sorted(str(d.code) for d in params.diagnostics))
        self.arrived.set()

    async def wait(self, version: int, count: int = 1, timeout: float = 60.0) -> float:
        deadline = time.perf_counter() + timeout
        while len(self.times.get(version, ())) < count:
            self.arrived.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no publish #{count} for version {version}")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                continue
        return self.times[version][count - 1]


EDITS = (
    ("bound", "accuracy >= 0.90 on comments_{i}.test", "accuracy >= 0.91 on comments_{i}.test"),
    ("typo", "classify(spam_{i})", "clasify(spam_{i})"),
    ("fix", "clasify(spam_{i})", "classify(spam_{i})"),
    ("new line", "labels spam_{i} on", "\nlabels spam_{i} on"),
    ("string", "data/comments_{i}/*.csv", "data/comments_{i}/*.tsv"),
    (
        "number",
        "deploy spam_filter_{i} {{\n  local {{ port = 8080 }}",
        "deploy spam_filter_{i} {{\n  local {{ port = 8081 }}",
    ),
)


def edits_for(text: str, count: int) -> list[tuple[str, str, str]]:
    """(label, old, new) replacements spread over the document's units, applied in turn;
    a typo and its fix hit the same unit."""
    units = text.count("dataset comments_")
    out = []
    for n in range(count):
        label, old, new = EDITS[n % len(EDITS)]
        unit = (n // len(EDITS) * 7 + (n % len(EDITS)) * 17) % units
        if label == "fix":
            unit = ((n - 1) // len(EDITS) * 7 + ((n - 1) % len(EDITS)) * 17) % units
        out.append((label, old.format(i=unit), new.format(i=unit)))
    return out


def change(text: str, old: str, new: str) -> tuple[str, types.TextDocumentContentChangePartial]:
    index = text.index(old)
    line = text.count("\n", 0, index)
    column = index - (text.rfind("\n", 0, index) + 1)
    end_line = line + old.count("\n")
    end_column = (len(old) - old.rfind("\n") - 1) if "\n" in old else column + len(old)
    span = types.Range(types.Position(line, column), types.Position(end_line, end_column))
    return text.replace(old, new, 1), types.TextDocumentContentChangePartial(range=span, text=new)


async def measure(text: str, path: Path, edits: int, gap: float) -> dict[str, object]:
    client = LanguageClient("lsp-speed", "1")
    published = Published()

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_publish(params: types.PublishDiagnosticsParams) -> None:
        published.record(params)

    await client.start_io(sys.executable, "-m", "fmlang", "lsp")
    await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities()))
    client.initialized(types.InitializedParams())
    uri = path.as_uri()
    start = time.perf_counter()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "fm", 1, text))
    )
    opened = await published.wait(1) - start
    verified_open = await published.wait(1, 2) - start
    latencies, rows = [], []
    for version, (label, old, new) in enumerate(edits_for(text, edits), start=2):
        await asyncio.sleep(gap)
        text, edit = change(text, old, new)
        sent = time.perf_counter()
        identifier = types.VersionedTextDocumentIdentifier(uri=uri, version=version)
        client.text_document_did_change(types.DidChangeTextDocumentParams(identifier, [edit]))
        latency = await published.wait(version) - sent
        latencies.append(latency)
        rows.append((label, latency, published.codes.get(version, [])))
    final = len(rows) + 1
    verified_last = await published.wait(final, 2) - published.times[final][0]
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"opened": opened, "verified_open": verified_open, "latencies": latencies,
            "rows": rows, "verified_last": verified_last, "text": text}  # fmt: skip


def baseline(text: str, runs: int) -> tuple[float, float]:
    from fmlang.api import analyze, check_text

    analyze(text, "big.fm")  # warm the grammar and stdlib
    full = [_timed(lambda: analyze(text, "big.fm")) for _ in range(runs)]
    check = [_timed(lambda: check_text(text, "big.fm")) for _ in range(runs)]
    return statistics.median(full), statistics.median(check)


def _timed(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=12)
    parser.add_argument("--gap", type=float, default=0.4, help="seconds between edits")
    parser.add_argument("--runs", type=int, default=3, help="runs of the analyze baseline")
    args = parser.parse_args()
    text = generate(args.lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.fm"
        path.write_text(text, encoding="utf-8")
        result = asyncio.run(measure(text, path, args.edits, args.gap))
    full, check = baseline(text, args.runs)
    report(text, result, full, check)


def report(text: str, result: dict[str, object], full: float, check: float) -> None:
    latencies: list[float] = result["latencies"]  # type: ignore[assignment]
    for label, latency, codes in result["rows"]:  # type: ignore[attr-defined]
        found = ", ".join(codes) or "none"
        print(f"  edit {label:<9} {latency * 1000:7.1f} ms   checker's diagnostics: {found}")
    median = statistics.median(latencies)
    lines = text.count("\n")
    print(
        f"open {lines:,}-line spec: checker's diagnostics {result['opened'] * 1000:.0f} ms, "
        f"verifier's {result['verified_open'] * 1000:.0f} ms"
    )  # type: ignore[operator]
    print(f"fmlang.api.analyze (parse, check, verify): {full * 1000:8.1f} ms")
    print(f"fmlang.api.check_text (parse, check):      {check * 1000:8.1f} ms")
    print(
        f"didChange -> publishDiagnostics, median of {len(latencies)} edits: "
        f"{median * 1000:.1f} ms (max {max(latencies) * 1000:.1f} ms) "
        f"{'ok' if median * 1000 < TARGET_MS else 'OVER'} (target < {TARGET_MS:.0f} ms); "
        f"{median / full:.2f}x a bare analyze, {median / check:.2f}x a bare check"
    )
    print(
        f"the verifier's diagnostics for the last edit followed "
        f"{result['verified_last'] * 1000:.0f} ms after the checker's"
    )  # type: ignore[operator]


if __name__ == "__main__":
    main()
