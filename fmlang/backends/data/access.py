"""Who may run what: the running principal checked against the grants before any stage
starts, again as each stage reads its inputs, and every decision appended to the audit log.

The principal is `--as PRINCIPAL` or the `FMC_PRINCIPAL` environment variable, written as
the spec writes parties (`team:trust-safety`, `user:ana`); how it was established (asserted,
the OS account, a signed token: `identity.py`) is recorded with every decision. Which
principals may run a stage is `fmlang.verify.access`'s answer, the same one `fmc check`
reports from: grants along the stage's whole path, failing closed (no grant means no access,
no principal means no access, and a principal that cannot be established is denied).

Every decision goes to the build folder's `audit.log`; FMC_AUDIT_LOG names a second log that
receives a copy of each entry (it cannot take the build's log away). `fmc run` writes both
for their owner alone (mode 0600; `Access.open` closes log files an earlier fmc left open).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fmlang.atomic import make_private
from fmlang.backends.data import audit
from fmlang.backends.data.audit_chain import head_path, lock_path, torn_path
from fmlang.backends.data.identity import PRINCIPAL_ENV, Principal, establish
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError
from fmlang.verify.access import AccessModel

AUDIT_ENV = "FMC_AUDIT_LOG"
AUDIT_LOG = "audit.log"


def audit_log_path(build_dir: Path) -> Path:
    """The build folder's audit log: always written, wherever FMC_AUDIT_LOG points."""
    return build_dir / AUDIT_LOG


def audit_copies(build_dir: Path) -> tuple[Path, ...]:
    """The log FMC_AUDIT_LOG names, when it is set and is not the build's own: it gets a
    copy of every entry (a log outside the build folder, for example one shared by builds)."""
    configured = os.environ.get(AUDIT_ENV)
    if not configured:
        return ()
    copy = Path(configured)
    same = os.path.realpath(copy) == os.path.realpath(audit_log_path(build_dir))
    return () if same else (copy,)


@dataclass(frozen=True)
class Access:
    principal: str | None
    log: Path
    spec_hash: str
    paths: AccessModel
    established: str | None = None  # asserted, os or token; None without a principal
    problem: Diagnostic | None = None  # why the principal cannot be trusted: deny everything
    copies: tuple[Path, ...] = ()  # FMC_AUDIT_LOG: more logs that get every entry

    @classmethod
    def open(cls, who: Principal | str | None, build_dir: Path, spec_hash: str,
             paths: AccessModel) -> Access:  # fmt: skip
        """Access for a run into `build_dir`: `who` as `fmc run` established it (a bare
        name is a claim, established here), logging to the build's audit log and its copy.
        Existing log files lose any access by others."""
        principal = establish(who) if isinstance(who, str) else who
        log, copies = audit_log_path(build_dir), audit_copies(build_dir)
        for file in (log, *copies):
            for part in (file, head_path(file), torn_path(file), lock_path(file)):
                make_private(part)
        if principal is None:
            return cls(None, log, spec_hash, paths, copies=copies)
        return cls(principal.name, log, spec_hash, paths, principal.established,
                   principal.problem, copies)  # fmt: skip

    def require_all(self, stages: list[str]) -> None:
        """Before any work: refuse the run (logging every decision) unless the principal
        may run each of `stages`."""
        refused = [stage for stage in stages if not self._decide(stage, [])]
        if self.problem is not None and refused:
            raise StageError(self.problem)
        if self.principal is None and refused:
            raise StageError(self._no_principal(refused))
        if refused:
            raise StageError(*(self._refusal(stage) for stage in refused))

    def require(self, stage: str, files: list[str]) -> None:
        """As a stage reads `files`: refuse (and log) unless the principal may run it."""
        if not self._decide(stage, files):
            raise StageError(self.problem or (self._no_principal([stage])
                             if self.principal is None else self._refusal(stage)))  # fmt: skip

    def refuse(self, stage: str, files: list[str], problem: Diagnostic) -> None:
        """Deny `stage` for a reason of its own (a source outside the project): log the
        denial with the reason, and raise it."""
        path = self.paths.paths.get(stage)
        self._append(stage, path.permission if path else "unknown", False, files, problem)
        raise StageError(problem)

    def _decide(self, stage: str, files: list[str]) -> bool:
        path = self.paths.paths.get(stage)
        allowed = self.problem is None and path is not None and self.principal in path.allowed
        self._append(stage, path.permission if path else "unknown", allowed, files, self.problem)
        return allowed

    def _append(self, stage: str, action: str, allowed: bool, files: list[str],
                reason: Diagnostic | None) -> None:  # fmt: skip
        """One entry in the build's log, then in each copy; any failure stops the stage."""
        record = {
            "principal": self.principal,
            "established": self.established,
            "action": action,
            "stage": stage,
            "decision": "allowed" if allowed else "denied",
            "files": files,
            "spec": self.spec_hash,
        }
        if reason is not None and not allowed:
            record["reason"] = f"{reason.code}: {reason.message}"
        for log in (self.log, *self.copies):
            audit.append(log, record)

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
