"""Who may run what: the running principal checked against the grants before any stage
starts, again as each stage reads its inputs, and every decision appended to the audit log.

The principal is `--as PRINCIPAL` or the `FMC_PRINCIPAL` environment variable, written as
the spec writes parties (`team:trust-safety`, `user:ana`). Which principals may run a stage is
`fmlang.verify.access`'s answer, the same one `fmc check` reports from: grants along the
stage's whole path, failing closed (no grant means no access, and no principal means no
access either).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fmlang.backends.data import audit
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.verify.access import AccessModel

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
    paths: AccessModel

    def require_all(self, stages: list[str]) -> None:
        """Before any work: refuse the run (logging every decision) unless the principal
        may run each of `stages`."""
        refused = [stage for stage in stages if not self._decide(stage, [])]
        if self.principal is None and refused:
            raise StageError(self._no_principal(refused))
        if refused:
            raise StageError(*(self._refusal(stage) for stage in refused))

    def require(self, stage: str, files: list[str]) -> None:
        """As a stage reads `files`: refuse (and log) unless the principal may run it."""
        if not self._decide(stage, files):
            raise StageError(self._no_principal([stage]) if self.principal is None
                             else self._refusal(stage))  # fmt: skip

    def _decide(self, stage: str, files: list[str]) -> bool:
        path = self.paths.paths.get(stage)
        allowed = path is not None and self.principal in path.allowed
        audit.append(
            self.log,
            {
                "principal": self.principal,
                "action": path.permission if path else "unknown",
                "stage": stage,
                "decision": "allowed" if allowed else "denied",
                "files": files,
                "spec": self.spec_hash,
            },
        )
        return allowed

    def _no_principal(self, stages: list[str]) -> Diagnostic:
        path = self.paths.paths.get(stages[0])
        who = ", ".join(f"`{p}`" for p in sorted(path.allowed)) if path else ""
        return error(
            "FM0703",
            f"no principal is set, and every stage is restricted ({len(stages)} to run)",
            path.span if path else None,
            f"`{stages[0]}` may be run by {who or 'no one'}",
            help=f"run as a granted principal: `fmc run … --as PRINCIPAL` or set {PRINCIPAL_ENV}",
        )

    def _refusal(self, stage: str) -> Diagnostic:
        path = self.paths.paths.get(stage)
        if path is None:
            return error("FM0702", f"`{self.principal}` may not run `{stage}`: no grant covers it")
        step = next(
            (s for s in path.steps if (s.holders is None and s.root)
             or (s.holders is not None and self.principal not in s.holders)),
            path.steps[-1],
        )  # fmt: skip
        who = ", ".join(f"`{p}`" for p in sorted(path.allowed)) or "no one"
        return error(
            "FM0702",
            f"`{self.principal}` may not {path.permission} for `{stage}`",
            step.span,
            f"`{step.permission}` on {step.what} is not granted to `{self.principal}`",
            help=f'add `grant {step.permission} to "{self.principal}"` to {step.what}, or run '
            f"as one who may: {who}",
        )
