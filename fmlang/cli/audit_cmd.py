"""`fmc audit verify`: check the hash-chained audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def audit() -> None:
    """Check the hash-chained audit log of data access."""


@audit.command()
@click.argument("log", type=click.Path(), required=False)
def verify(log: str | None) -> None:
    """Verify LOG (default: $FMC_AUDIT_LOG or .fm-build/*/audit.log) has not been edited."""
    from fmlang.backends.data.audit import verify_log
    from fmlang.cli.main import EXIT_INPUT, EXIT_OK, EXIT_USAGE

    path = _log_path(log)
    try:
        verdict = verify_log(path)
    except OSError as exc:
        click.echo(f"error[FM0708]: cannot read the audit log `{path}`: {exc.strerror or exc}",
                   err=True)  # fmt: skip
        sys.exit(EXIT_USAGE)
    if verdict.broken is not None:
        click.echo(
            f"{path}:{verdict.broken.line}: error[FM0707]: the audit log was tampered with: "
            f"entry on line {verdict.broken.line} {verdict.broken.reason}\n"
            f"  = note: the {verdict.entries} entries before it verify",
            err=True,
        )
        sys.exit(EXIT_INPUT)
    click.echo(f"{path}: {verdict.entries} entries, chain intact (head {verdict.head[:12]})")
    sys.exit(EXIT_OK)


def _log_path(log: str | None) -> Path:
    import os

    if log:
        return Path(log)
    if os.environ.get("FMC_AUDIT_LOG"):
        return Path(os.environ["FMC_AUDIT_LOG"])
    found = sorted(Path(".fm-build").glob("*/audit.log"))
    return found[0] if len(found) == 1 else Path(".fm-build") / "audit.log"
