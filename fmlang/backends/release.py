"""Which registered version ships: gate verdicts, tags, the `current` pointer, rollback, and
the version `fmc serve` serves.

A version can be served when it is not superseded (`Registry.mark_superseded`: trained on
rows a forget request removed) and none of its runtime gates failed (`gates_passed` is not
False; a gate that could not be measured here is a warning at run time and does not block
it, and the startup line says so). For a name, serving takes, in this order:

1. the version `fmc serve --version REF` names;
2. the name's `current` pointer (`fmc rollback`), when one is set;
3. the newest version (by registration order) that can be served.

A model that selects its base (`base auto in [...]`) has no versions of its own: each
candidate `m+c` is registered under its own name, and `fmc run` points the registry's
`selected` pointer for `m` at the winner's version. Serving `m` takes that version (or a
candidate version `--version` names), admitted as a pointed-at version is.

A named or pointed-at version that cannot be served is refused with what failed (measured
against the bound) unless `--allow-failed-gates`; a superseded one is always refused (the
rows it was trained on must not be served). With `--allow-failed-gates` and no passing
version, the newest version that is not superseded is served. Pointers live in the registry
index (registry.py); this module reads and moves them. No torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fmlang.backends.registry import Registry, Version
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

TAG = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
ALLOW_HELP = "or pass --allow-failed-gates to serve it anyway"


@dataclass(frozen=True)
class Chosen:
    """The version served for one name, why it was chosen, and what was passed over."""

    version: Version
    reason: str  # "named by --version", "the current pointer", "the newest passing version"
    allowed_failure: bool = False  # served with failed gates under --allow-failed-gates
    skipped: tuple[tuple[Version, str], ...] = ()  # newer versions passed over, and why

    def describe(self) -> str:
        v = self.version
        line = f"serving {v.ref} ({v.short}, {self.reason}); gates: {gate_summary(v)}"
        if self.skipped:
            line += "; passed over " + ", ".join(f"{s.ref} ({why})" for s, why in self.skipped)
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.version.name,
            "hash": self.version.hash,
            "ref": self.version.ref,
            "reason": self.reason,
            "gates_passed": self.version.lineage.gates_passed,
            "allowed_failure": self.allowed_failure,
            "skipped": [{"ref": s.ref, "why": why} for s, why in self.skipped],
        }


# ---- verdicts -----------------------------------------------------------------------


def gate_text(gate: dict[str, Any]) -> str:
    """`perplexity 14.21 <= 1.5 (line 40)`: one gate, measured against its bound."""
    measured, bound = gate.get("measured"), gate.get("bound")
    shown = "not measured" if measured is None else f"{measured:.4g}"
    bound_text = "-" if bound is None else f"{bound:.4g}"
    where = f" (line {gate['line']})" if gate.get("line") else ""
    return f"{gate.get('metric')} {shown} {gate.get('op')} {bound_text}{where}"


def failed_gates(version: Version) -> list[dict[str, Any]]:
    return [g for g in version.lineage.gates if g.get("passed") is False]


def gate_summary(version: Version) -> str:
    """`2 passed`, `FAILED perplexity 14.2 <= 1.5 (line 40)`, `1 passed, 1 not measured`, or
    `not recorded` (registered before gates were recorded)."""
    lineage = version.lineage
    if not lineage.gates:
        return "none" if lineage.gates_passed is True else "not recorded"
    failed = failed_gates(version)
    if failed:
        return "FAILED " + "; ".join(gate_text(g) for g in failed)
    passed = sum(g.get("passed") is True for g in lineage.gates)
    unmeasured = len(lineage.gates) - passed
    return f"{passed} passed" + (f", {unmeasured} not measured here" if unmeasured else "")


def blocker(version: Version) -> str | None:
    """Why `version` cannot be served: superseded, or a failed gate; None when it can."""
    if version.lineage.superseded:
        return f"superseded: {version.lineage.superseded}"
    failed = failed_gates(version)
    if failed:
        return "gates failed: " + "; ".join(gate_text(g) for g in failed)
    return None


# ---- choosing what to serve ---------------------------------------------------------


def choose(
    registry: Registry, name: str, ref: str | None = None, allow_failed: bool = False
) -> Chosen:
    """The version of `name` to serve (see the module docstring); FM1080 to FM1083."""
    selected = registry.pointers("selected").get(name)
    if selected is not None and not registry.versions(name):
        return _choose_selected(registry, name, selected, ref, allow_failed)
    if ref is not None:
        named = registry.resolve(ref)
        if named.name != name:
            raise StageError(other_name(ref, named, f"`{name}`"))
        return _admit(named, "named by --version", allow_failed)
    current = registry.pointers("current").get(name)
    versions = registry.versions(name)
    pointed = next((v for v in versions if v.hash == current), None)
    if pointed is not None:
        return _admit(pointed, "the current pointer (`fmc rollback`)", allow_failed)
    skipped: list[tuple[Version, str]] = []
    for version in reversed(versions):
        why = blocker(version)
        if why is None:
            return Chosen(version, "the newest passing version", skipped=tuple(skipped))
        skipped.append((version, why))
    unsuperseded = [v for v, _ in skipped if not v.lineage.superseded]
    if allow_failed and unsuperseded:
        newest = unsuperseded[0]
        rest = tuple((v, why) for v, why in skipped if v != newest)
        return Chosen(newest, "the newest version, --allow-failed-gates", True, rest)
    raise StageError(_nothing_to_serve(name, skipped))


def serves_as(version_name: str) -> str:
    """The name a version serves under: a selection candidate `m+c` serves as `m`."""
    from fmlang.ir.selection import SEPARATOR

    return version_name.split(SEPARATOR, 1)[0]


def _choose_selected(
    registry: Registry, name: str, selected: str, ref: str | None, allow_failed: bool
) -> Chosen:
    """`name` selects its base: the candidate `fmc run` chose, or one `ref` names."""
    if ref is not None:
        named = registry.resolve(ref)
        if serves_as(named.name) != name:
            raise StageError(other_name(ref, named, f"`{name}`"))
        return _admit(named, "named by --version", allow_failed)
    chosen = next(v for v in registry.versions() if v.hash == selected)  # pointers are kept valid
    return _admit(chosen, f"the candidate `fmc run` selected for `{name}`", allow_failed)


def _admit(version: Version, reason: str, allow_failed: bool) -> Chosen:
    if version.lineage.superseded:
        raise StageError(_superseded(version, reason))
    if failed_gates(version):
        if not allow_failed:
            raise StageError(_failed(version, reason))
        return Chosen(version, reason + ", --allow-failed-gates", True)
    return Chosen(version, reason)


# ---- tags and the current pointer -------------------------------------------------------


def tag(registry: Registry, ref: str, name: str) -> Version:
    """Tag the version `ref` names as `name` (moving the tag if it named another)."""
    if not TAG.fullmatch(name) or re.fullmatch(r"[0-9a-fA-F]{4,}", name):
        raise StageError(_bad_tag(name, "a letter, then letters, digits, `.`, `_` or `-`"))
    version = registry.resolve(ref)
    if any(v.name == name for v in registry.versions()):
        raise StageError(_bad_tag(name, "not the name of a model or merge"))
    registry.set_pointer("tags", name, version)
    return version


def tags_of(registry: Registry) -> dict[str, list[str]]:
    """hash → its tags, sorted."""
    out: dict[str, list[str]] = {}
    for name, digest in sorted(registry.pointers("tags").items()):
        out.setdefault(digest, []).append(name)
    return out


def serving_now(registry: Registry, name: str) -> Version | None:
    """What `fmc serve` would serve for `name` without flags; None when nothing can be."""
    try:
        return choose(registry, name).version
    except StageError:
        return None


def rollback(
    registry: Registry, name: str, to: str | None = None, allow_failed: bool = False
) -> tuple[Version | None, Version]:
    """Point `name`'s `current` at `to`, or at the newest servable version older than the
    one served now; returns (served before, served now). FM0854 to FM0856."""
    versions = registry.versions(name)
    if not versions:
        registry.resolve(name)  # FM0849 with a suggestion
    current = registry.pointers("current").get(name)
    pointed = next((v for v in versions if v.hash == current), None)
    before = pointed or serving_now(registry, name)
    if to is not None:
        target = registry.resolve(to)
        if target.name != name:
            raise StageError(_rollback_other(to, target, name))
        if target.lineage.superseded or (failed_gates(target) and not allow_failed):
            raise StageError(_cannot_point(target))
    else:
        older = [v for v in versions if before is None or v.lineage.seq < before.lineage.seq]
        previous = next((v for v in reversed(older) if blocker(v) is None), None)
        if previous is None:
            raise StageError(_nothing_older(name, before, versions))
        target = previous
    registry.set_pointer("current", name, target)
    return before, target


def clear_current(registry: Registry, name: str) -> Version | None:
    """Remove `name`'s `current` pointer: serving takes the newest passing version again."""
    if not registry.versions(name):
        registry.resolve(name)
    registry.set_pointer("current", name, None)
    return serving_now(registry, name)


# ---- diagnostics --------------------------------------------------------------------


def _failed(version: Version, reason: str) -> Diagnostic:
    failed = failed_gates(version)
    return error(
        "FM1081",
        f"{version.ref} ({version.short}, {reason}) failed "
        f"{len(failed)} runtime gate{'s' if len(failed) != 1 else ''}: it is not served",
        notes=tuple(f"measured {gate_text(g)}: failed" for g in failed),
        help="serve a passing version (`fmc log` shows each version's gates; `fmc rollback "
        f"{version.name}` points back to the previous passing one), {ALLOW_HELP}",
    )


def _superseded(version: Version, reason: str) -> Diagnostic:
    return error(
        "FM1082",
        f"{version.ref} ({version.short}, {reason}) is superseded and is never served: "
        f"{version.lineage.superseded}",
        help=f"run `fmc run` to train a version without the forgotten rows, or point "
        f"`{version.name}` at another version (`fmc rollback {version.name} --to REF`, or "
        f"`--clear` to serve the newest passing one)",
    )


def other_name(ref: str, version: Version, served: str) -> Diagnostic:
    """FM1083: --version names a version of `version.name`; the deployment serves
    `served` (names in backquotes)."""
    return error(
        "FM1083",
        f"--version `{ref}` is {version.ref}, a version of `{version.name}`, but this "
        f"deployment serves {served}",
        help=f"name a version of {served} (`fmc log BUILD --name NAME` lists them)",
    )


def _nothing_to_serve(name: str, skipped: list[tuple[Version, str]]) -> Diagnostic:
    if not skipped:
        return error(
            "FM1080",
            f"no registered version of `{name}` to serve",
            help="run `fmc run` first: it trains (or merges) and registers what the "
            "deployment serves",
        )
    return error(
        "FM1080",
        f"no version of `{name}` can be served: each of the {len(skipped)} registered "
        "versions failed a gate or is superseded",
        notes=tuple(f"{v.ref} ({v.short}): {why}" for v, why in skipped),
        help="fix what the gates measure and run `fmc run` again, name a version with "
        f"`--version REF`, {ALLOW_HELP}",
    )


def _bad_tag(name: str, rule: str) -> Diagnostic:
    return error(
        "FM0853",
        f"`{name}` cannot be a tag: a tag is {rule}, and never a hash prefix",
        help="choose another tag, such as `prod`, `v1.2` or `candidate-3`",
    )


def _nothing_older(name: str, before: Version | None, versions: list[Version]) -> Diagnostic:
    what = f"older than {before.ref}" if before else "at all"
    return error(
        "FM0854",
        f"nothing to roll `{name}` back to: no version {what} can be served",
        notes=tuple(f"{v.ref} ({v.short}): {blocker(v) or 'can be served'}" for v in versions),
        help=f"name one with `fmc rollback {name} --to REF` (--allow-failed-gates to point at "
        "one whose gates failed)",
    )


def _rollback_other(ref: str, version: Version, name: str) -> Diagnostic:
    return error(
        "FM0855",
        f"`{ref}` is {version.ref}, a version of `{version.name}`, not of `{name}`",
        help=f"name a version of `{name}` (`fmc log BUILD --name {name}` lists them)",
    )


def _cannot_point(version: Version) -> Diagnostic:
    why = blocker(version) or ""
    fix = (
        "a superseded version is never served: choose another"
        if version.lineage.superseded
        else f"choose a passing version, {ALLOW_HELP.replace('serve', 'point at')}"
    )
    return error(
        "FM0856",
        f"cannot make {version.ref} ({version.short}) current: {why}",
        help=fix,
    )
