"""Who may read what: the current principal checked against a dataset's grants before any
of its rows are read, and every decision appended to the audit log.

The principal is `--as PRINCIPAL` or the `FMC_PRINCIPAL` environment variable, written as
the spec writes parties (`team:trust-safety`, `user:ana`). A dataset with no `grant` lines
is open to everyone; one with grants admits only the principals granted the permission the
stage needs: `read` to run its data stage, `label` to label it, `train` to train on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fmlang.backends.data import audit
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.ir.nodes import Dataset

PRINCIPAL_ENV = "FMC_PRINCIPAL"
AUDIT_ENV = "FMC_AUDIT_LOG"


def current_principal(flag: str | None) -> str | None:
    return flag or os.environ.get(PRINCIPAL_ENV) or None


def audit_log_path(build_dir: Path) -> Path:
    configured = os.environ.get(AUDIT_ENV)
    return Path(configured) if configured else build_dir / "audit.log"


@dataclass(frozen=True)
class Access:
    principal: str | None
    log: Path
    spec_hash: str

    def require(self, dataset: Dataset, permission: str, stage: str, files: list[str]) -> None:
        """Refuse (and log the refusal) unless the principal holds `permission`."""
        granted = sorted({p for g in dataset.grants if g.permission == permission
                          for p in g.principals})  # fmt: skip
        open_data = not dataset.grants
        allowed = open_data or (self.principal is not None and self.principal in granted)
        self._record(dataset, permission, stage, files, allowed)
        if not allowed:
            raise StageError(self._refusal(dataset, permission, granted))

    def _record(self, dataset: Dataset, permission: str, stage: str, files: list[str],
                allowed: bool) -> None:  # fmt: skip
        audit.append(
            self.log,
            {
                "principal": self.principal,
                "action": permission,
                "dataset": dataset.name,
                "stage": stage,
                "decision": "allowed" if allowed else "denied",
                "files": files,
                "spec": self.spec_hash,
            },
        )

    def _refusal(self, dataset: Dataset, permission: str, granted: list[str]) -> Diagnostic:
        span = dataset.span.to_span() if dataset.span else None
        who = ", ".join(f"`{p}`" for p in granted) or "nobody"
        if self.principal is None:
            return error(
                "FM0703",
                f"dataset `{dataset.name}` is restricted and no principal is set",
                span,
                f"`{permission}` is granted to {who}",
                help=f"run as a granted principal: `fmc run … --as PRINCIPAL` or set "
                f"{PRINCIPAL_ENV}",
            )
        return error(
            "FM0702",
            f"`{self.principal}` may not {permission} dataset `{dataset.name}`",
            span,
            f"`{permission}` is granted to {who}",
            help=f'add `grant {permission} to "{self.principal}"` to the dataset, or run as '
            "a granted principal",
        )
