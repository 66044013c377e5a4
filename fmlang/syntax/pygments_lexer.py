"""A Pygments lexer for `.fm` specs: highlighted excerpts on a terminal (rich) and in docs.

Registered as the Pygments lexer `fm` (entry point `pygments.lexers`), so
`pygmentize -l fm spec.fm` and Markdown code fences marked `fm` are highlighted; it follows
the TextMate grammar in `editors/vscode/syntaxes/fm.tmLanguage.json`. Pygments is optional:
import this module only where it is installed.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words  # type: ignore[import-untyped]
from pygments.token import (  # type: ignore[import-untyped]
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

DECLARATIONS = ("let", "dataset", "labels", "model", "merge", "base_model", "hardware")
TARGETS = ("constraints", "deploy")
STATEMENTS = (
    "schema", "clean", "split", "grant", "lf", "dedupe", "drop", "keep", "normalize", "redact",
    "where", "near", "to", "by", "on", "with", "select",
)  # fmt: skip
CONSTANTS = ("true", "false", "auto")
OPERATOR_WORDS = ("and", "or", "not", "in", "contains", "allows")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# A `/` after a value divides; after one of these (and up to two spaces) it starts a regex.
_AFTER_OPERATOR = r"(?:(?<=[~=(\[,:])|(?<=[~=(\[,:]\s)|(?<=[~=(\[,:]\s\s))"
_NUMBER = r"(?:\d[\d_]*(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?"


class FmLexer(RegexLexer):  # type: ignore[misc]
    name = "fm"
    aliases = ["fm", "fmc"]  # noqa: RUF012 (Pygments reads these class attributes)
    filenames = ["*.fm"]  # noqa: RUF012
    mimetypes = ["text/x-fm"]  # noqa: RUF012
    url = "https://pypi.org/project/fmlang/"

    tokens = {  # noqa: RUF012
        "root": [
            (r"#.*?$", Comment.Single),
            (r"\s+", Whitespace),
            (r'"(\\.|[^"\\\n])*"', String.Double),
            (
                _AFTER_OPERATOR + r"/(?![/*\s])(?:[^/\\\n]|\\.)+/[a-z]*",
                String.Regex,
            ),
            (r"^(import)\b", Keyword.Namespace),
            (
                rf"^({'|'.join(DECLARATIONS)})(\s+)({_NAME})",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
            ),
            (
                rf"^({'|'.join(TARGETS)})(\s+)({_NAME})",
                bygroups(Keyword.Declaration, Whitespace, Name),
            ),
            (words(STATEMENTS, suffix=r"\b(?!\s*[=:])"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(OPERATOR_WORDS, suffix=r"\b"), Operator.Word),
            (rf"@{_NAME}", Name.Decorator),
            (
                rf"({_NUMBER})(?![eE][+-]?\d)(%|[A-Za-z]+(?:/[A-Za-z]+)?)(?![A-Za-z0-9_])",
                bygroups(Number, Keyword.Type),
            ),
            (_NUMBER, Number),
            (r"->|\.\.|<=|>=|==|!=|!~|[<>~=+\-*/]", Operator),
            (rf"{_NAME}(?=\s*\()", Name.Function),
            (_NAME, Name),
            (r"[{}\[\]();,:.]", Punctuation),
        ]
    }
