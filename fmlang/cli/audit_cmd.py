"""`fmc audit verify`: check the hash-chained audit log against its head (and its MACs when
FMC_AUDIT_KEY is set). Exit 0 when it verifies, 1 when tampering is detected, 2 when it
cannot be read or checked (no log, or a signed log and no key)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fmlang.backends.data.audit_verify import Anchor, Verdict
    from fmlang.diagnostics import Diagnostic

MIN_ANCHOR_HEX = 16


@click.group()
def audit() -> None:
    """Check the hash-chained audit log of data access."""


def _anchor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Anchor | None:
    from fmlang.backends.data.audit_verify import Anchor

    if value is None:
        return None
    entries, _, digest = value.partition(":")
    digest = digest.lower()
    hex_digits = set("0123456789abcdef")
    if not (entries.isdigit() and len(digest) >= MIN_ANCHOR_HEX and set(digest) <= hex_digits):
        raise click.BadParameter(
            f"write ENTRIES:HASH with at least {MIN_ANCHOR_HEX} hex digits of the hash, as "
            "`fmc audit verify` prints it (for example 42:3f5e0c1d9a7b2e64)"
        )
    return Anchor(int(entries), digest)


EXPECT_HELP = (
    "a head recorded earlier, out of the writers' reach: entry ENTRIES must still be in the "
    "log with this hash (detects a rollback of both the log and its head)"
)


@audit.command()
@click.argument("log", type=click.Path(), required=False)
@click.option("--expect", "anchor", metavar="ENTRIES:HASH", callback=_anchor, help=EXPECT_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["short", "json"]),
    default="short",
    show_default=True,
    help="one line per problem on stderr, or JSON on stdout",
)
def verify(log: str | None, anchor: Anchor | None, fmt: str) -> None:
    """Verify LOG (default: $FMC_AUDIT_LOG or .fm-build/*/audit.log): its chain, its head
    (LOG.head), and every entry's MAC when FMC_AUDIT_KEY is set."""
    from fmlang.backends.data.audit_chain import signing_key
    from fmlang.backends.data.audit_verify import Verdict, verify_log
    from fmlang.errors import StageError

    path = _log_path(log)
    try:
        key = signing_key()
    except StageError as exc:
        verdict = Verdict(path, 0, "", None, tuple(exc.diagnostics))
    else:
        verdict = verify_log(path, key, anchor)
    if fmt == "json":
        click.echo(json.dumps(_as_json(verdict), indent=2))
    else:
        _print(verdict)
    sys.exit(_exit_code(verdict))


def _exit_code(verdict: Verdict) -> int:
    from fmlang.cli.main import EXIT_INPUT, EXIT_OK, EXIT_USAGE
    from fmlang.diagnostics import Severity
    from fmlang.diagnostics.codes import is_io

    errors = [d for d in verdict.diagnostics if d.severity is Severity.ERROR]
    if not errors:
        return EXIT_OK
    return EXIT_USAGE if all(is_io(d.code) for d in errors) else EXIT_INPUT


def _print(verdict: Verdict) -> None:
    for diagnostic in verdict.diagnostics:
        click.echo(_text(diagnostic), err=True)
    notes = "".join(f"\n  = note: {note}" for note in verdict.notes)
    if verdict.ok:
        click.echo(f"{_summary(verdict)}{notes}")
    else:
        verified = f"its first {verdict.entries}" if verdict.entries else "none of its entries"
        click.echo(f"{verdict.log}: does not verify ({verified} do){notes}", err=True)


def _summary(verdict: Verdict) -> str:
    signing = (
        f"signed with {verdict.key_id}, every MAC verifies"
        if verdict.key_id
        else "unsigned: without FMC_AUDIT_KEY, anyone who can write the log and its head can "
        "rewrite both undetected"
    )
    return (
        f"{verdict.log}: {verdict.entries} entries, chain intact, head matches "
        f"(--expect {verdict.entries}:{verdict.head[:MIN_ANCHOR_HEX]}); {signing}"
    )


def _text(diagnostic: Diagnostic) -> str:
    from fmlang.diagnostics.render import short

    lines = [short(diagnostic)]
    lines += [f"  = note: {note}" for note in diagnostic.notes]
    lines += [f"  = help: {diagnostic.help}"] if diagnostic.help else []
    return "\n".join(lines)


def _as_json(verdict: Verdict) -> dict[str, object]:
    return {
        "log": str(verdict.log),
        "ok": verdict.ok,
        "entries": verdict.entries,
        "head": verdict.head,
        "signed_with": verdict.key_id,
        "diagnostics": [d.to_json() for d in verdict.diagnostics],
        "notes": list(verdict.notes),
    }


def _log_path(log: str | None) -> Path:
    import os

    if log:
        return Path(log)
    if os.environ.get("FMC_AUDIT_LOG"):
        return Path(os.environ["FMC_AUDIT_LOG"])
    found = sorted(Path(".fm-build").glob("*/audit.log"))
    return found[0] if len(found) == 1 else Path(".fm-build") / "audit.log"
