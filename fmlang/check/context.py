"""What a pass needs while looking at one file: the program, the file, a way to report."""

from __future__ import annotations

from dataclasses import dataclass

from fmlang.check.program import Program, SourceFile, Symbol
from fmlang.diagnostics import Diagnostic, Label, Severity, Span, error
from fmlang.suggest import did_you_mean
from fmlang.syntax import ast


@dataclass
class Ctx:
    program: Program
    source: SourceFile

    def report(self, diagnostic: Diagnostic) -> None:
        self.program.sink.add(diagnostic)

    def error(
        self, code: str, message: str, span: Span | None, label: str = "", help: str | None = None
    ) -> None:
        self.report(error(code, message, span, label, help=help))

    def warn(
        self, code: str, message: str, span: Span, label: str = "", help: str | None = None
    ) -> None:
        self.report(Diagnostic(Severity.WARNING, code, message, (Label(span, label),), (), help))

    def lookup(self, name: str) -> Symbol | None:
        return self.program.lookup(self.source.path, name)

    def resolve(self, ident: ast.Ident | ast.Name, kinds: tuple[str, ...]) -> Symbol | None:
        """The declaration `ident` names, which must be one of `kinds`; reports otherwise."""
        name = ident.name if isinstance(ident, ast.Ident) else ident.id
        symbol = self.lookup(name)
        wanted = " or ".join(f"`{k}`" for k in kinds)
        if symbol is None:
            candidates = [
                n
                for n, s in self.program.scopes.get(self.source.path, {}).items()
                if s.kind in kinds
            ]
            hint = did_you_mean(name, candidates) or _import_hint(kinds)
            self.error(
                "FM0401",
                f"unknown {wanted} `{name}`",
                ident.span,
                f"no {wanted} named `{name}` is declared or imported",
                hint,
            )
            return None
        if symbol.kind not in kinds:
            self.report(
                error(
                    "FM0402",
                    f"`{name}` is a `{symbol.kind}`, but a {wanted} is needed here",
                    ident.span,
                    f"expected a {wanted}",
                    related=(Label(symbol.span, f"`{name}` is declared here", False),),
                )
            )
            return None
        return symbol


def _import_hint(kinds: tuple[str, ...]) -> str | None:
    if "base_model" in kinds:
        return "import one from the stdlib, e.g. `import std.models.minilm_l6`"
    if "hardware" in kinds:
        return "import a profile, e.g. `import std.hardware.{cpu_2core, h100}`"
    return None


def dotted(expr: ast.Expr) -> list[ast.Ident] | None:
    """`a.b.c` as identifiers, or None when the expression is not a dotted name."""
    if isinstance(expr, ast.Name):
        return [ast.Ident(expr.id, expr.span)]
    if isinstance(expr, ast.Attribute):
        head = dotted(expr.value)
        return None if head is None else [*head, expr.attr]
    return None


def describe(expr: ast.Expr) -> str:
    names = {
        ast.Name: "a name", ast.Attribute: "a dotted name", ast.Call: "a call",
        ast.Number: "a number", ast.Quantity: "a quantity", ast.String: "a string",
        ast.Regex: "a regex", ast.Bool: "a boolean", ast.Auto: "`auto`", ast.ListExpr: "a list",
        ast.Range: "a range", ast.Binary: "an expression", ast.Unary: "an expression",
    }  # fmt: skip
    return names.get(type(expr), "a value")
