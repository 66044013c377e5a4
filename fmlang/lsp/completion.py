"""Completion: keywords, setting keys and values from the schema table, names in scope,
stdlib entries (with their import), hardware profiles, columns, splits, classes, functions."""

from __future__ import annotations

import re

from lsprotocol import types

from fmlang.check import schema as s
from fmlang.check.constraints import FLOW_SINKS, FORMS, LATENCY_STATS
from fmlang.check.expressions import FUNCTIONS
from fmlang.lsp.catalog import CK, Items, Names, stdlib_entries
from fmlang.lsp.cursor import Cursor, cursor_at
from fmlang.lsp.describe import kind_text
from fmlang.lsp.documents import Snapshot
from fmlang.lsp.positions import LineIndex
from fmlang.syntax import ast
from fmlang.syntax.incremental import TOP_LEVEL

SNIPPETS = {
    "import": "import std.${1:models}.${2:minilm_l6}",
    "let": "let ${1:name} = ${2:value}",
    "dataset": (
        'dataset ${1:name} {\n  source csv("${2:data/*.csv}")\n'
        "  schema {\n    ${3:id}: string @id\n  }\n}"
    ),
    "labels": (
        "labels ${1:name} on ${2:dataset} {\n  classes [${3:negative, positive}]\n"
        "  lf ${4:rule}: $0\n}"
    ),
    "model": "model ${1:name} {\n  base ${2:minilm_l6}\n  task ${3:classify(labels)}\n}",
    "merge": "merge ${1:name} {\n  models [${2:a, b}]\n  method ${3:linear}\n}",
    "constraints": "constraints ${1:model} {\n  $0\n}",
    "deploy": "deploy ${1:model} {\n  local { port = ${2:8080} }\n}",
    "base_model": "base_model ${1:name} {\n  $0\n}",
    "hardware": "hardware ${1:name} {\n  $0\n}",
}
BLOCK_KEYWORDS = {"dataset": ("schema", "clean", "split", "grant"), "labels": ("lf", "grant")}
CLEAN_RULES = ("dedupe", "drop", "keep", "normalize", "redact")
_ONE_WORD = re.compile(r"^[A-Za-z_][\w.]*$|^$")
_KEY_VALUE = re.compile(r"^([A-Za-z_]\w*)\s*=?\s*(.*)$", re.DOTALL)


def complete(
    text: str, lines: LineIndex, position: types.Position, parsed: Snapshot | None
) -> list[types.CompletionItem]:
    line, column = lines.line_column(position)
    offset = sum(len(row) + 1 for row in lines.lines[: line - 1]) + column - 1
    cursor = cursor_at(text, offset)
    if cursor.quiet:
        return []
    items = Items(text, lines, line, column, cursor.word)
    _Completer(cursor, Names(parsed), items).run()
    return items.out


class _Completer:
    def __init__(self, cursor: Cursor, names: Names, items: Items) -> None:
        self.cursor, self.names, self.items = cursor, names, items
        self.statement = cursor.statement

    @property
    def one_word(self) -> bool:
        return bool(_ONE_WORD.match(self.statement))

    def run(self) -> None:
        kind = self.cursor.kind
        if not self.cursor.blocks:
            self.top_level()
        elif kind == "import":
            self.import_names(self.cursor.blocks[0])
        elif kind == "dataset":
            self.dataset()
        elif kind == "labels":
            self.labels()
        elif kind == "constraints":
            self.constraint()
        elif kind in s.BLOCKS:
            self.settings(self.table(kind), kind)

    # ---- top level and imports ---------------------------------------------------------

    def top_level(self) -> None:
        words = self.statement.split()
        if self.one_word and not self.statement.startswith("import"):
            for keyword in TOP_LEVEL:
                self.items.add(keyword, CK.Snippet, f"{keyword} …", SNIPPETS[keyword], snippet=True)
        elif words[0] == "import":
            self.items.words(sorted({f"std.{e.module}" for e in stdlib_entries()}), CK.Module)
            self.items.words([e.dotted for e in stdlib_entries()], CK.Reference)
        elif words[0] in ("constraints", "deploy") and len(words) <= 2:
            self.items.symbols(self.names.of_kind("model", "merge"))
        elif words[0] == "labels" and "on" in words[2:3]:
            self.data_refs(labels_ok=False)

    def import_names(self, header: str) -> None:
        module = header.split()[-1].removeprefix("std.").rstrip(".") if header.split() else ""
        entries = [e for e in stdlib_entries() if e.module == module]
        for entry in entries:
            self.items.add(entry.name, CK.Reference, f"{entry.kind} {entry.summary}".strip())

    # ---- settings ------------------------------------------------------------------------

    def table(self, kind: str) -> dict[str, s.Kind]:
        table = s.BLOCKS.get(kind, {})
        for header in self.cursor.nested:
            inner = table.get(header)
            table = inner.settings if isinstance(inner, s.Block) else {}
        return table

    def settings(self, table: dict[str, s.Kind], block: str) -> None:
        if self.one_word:
            for key, kind in table.items():
                self.items.add(key, CK.Property, kind_text(kind))
            extra = BLOCK_KEYWORDS.get(block, ("grant",)) if not self.cursor.nested else ()
            self.items.words(extra, CK.Keyword)
            return
        match = _KEY_VALUE.match(self.statement)
        if match is None:
            return
        key = match.group(1)
        if key == "grant":
            self.grant()
        elif self.cursor.calls:
            self.call(table.get(key))
        else:
            self.value(table.get(key), key)

    def grant(self) -> None:
        if " to " not in f"{self.statement} ":
            self.items.words(s.PERMISSIONS, CK.EnumMember, "permission")

    def call(self, kind: s.Kind | None) -> None:
        head = self.cursor.calls[0]
        if not isinstance(kind, s.Call) or head not in kind.heads:
            self.expression_names()
            return
        keywords = kind.heads[head]
        argument = self.cursor.argument
        if "=" in argument:
            name = argument.split("=")[0].strip()
            self.value(keywords.get(name), name)
            return
        for name, arg_kind in keywords.items():
            self.items.add(name, CK.Property, kind_text(arg_kind), f"{name} = ")
        for positional in kind.positional.get(head, ())[:1]:
            self.value(positional, head)

    def value(self, kind: s.Kind | None, key: str) -> None:
        if kind is None:
            return
        if kind.auto or isinstance(kind, s.Between):
            self.items.add("auto", CK.Keyword, "the solver chooses")
        if isinstance(kind, s.OneOf | s.Names) and kind.values:
            self.items.words(kind.values, CK.EnumMember, kind.doc or None)
        elif isinstance(kind, s.Names) and key in ("targets", "feedforward"):
            self.items.words(self.base_modules(), CK.EnumMember, "module of the base model")
        elif isinstance(kind, s.Flag):
            self.items.words(("true", "false"), CK.Keyword)
        elif isinstance(kind, s.Ref):
            self.references(kind.target)
        elif isinstance(kind, s.DataRef):
            self.data_refs(kind.labels_ok)
        elif isinstance(kind, s.Column):
            self.items.words(self.training_columns(), CK.Field, "column")
        elif isinstance(kind, s.Call):
            for head, arguments in kind.heads.items():
                takes = arguments or kind.positional.get(head)
                self.items.add(
                    head,
                    CK.Function,
                    kind.doc or None,
                    f"{head}($0)" if takes else head,
                    snippet=True,
                )

    def references(self, kinds: tuple[str, ...]) -> None:
        self.items.symbols(self.names.of_kind(*kinds))
        for kind in kinds:
            if kind in ("base_model", "hardware"):
                self.items.stdlib(kind, set(self.names.scope))

    def data_refs(self, labels_ok: bool) -> None:
        for symbol in self.names.of_kind("dataset"):
            self.items.add(symbol.name, CK.Struct, "dataset")
            for split in self.names.splits(symbol.name):
                self.items.add(f"{symbol.name}.{split}", CK.Struct, f"split of {symbol.name}")
        if labels_ok:
            self.items.symbols(self.names.of_kind("labels"))

    def model_block(self) -> ast.Block | None:
        node = self.names.node(self.cursor.item_name, ast.Block)
        return node if isinstance(node, ast.Block) else None

    def base_modules(self) -> list[str]:
        from fmlang.check.settings import setting_value

        model = self.model_block()
        base = setting_value(model.body, "base") if model else None
        node = self.names.node(base.id, ast.Block) if isinstance(base, ast.Name) else None
        modules = setting_value(node.body, "modules") if isinstance(node, ast.Block) else None
        return (
            [i.id for i in modules.items if isinstance(i, ast.Name)]
            if isinstance(modules, ast.ListExpr)
            else []
        )

    def training_columns(self) -> list[str]:
        from fmlang.check.settings import setting, setting_value

        model = self.model_block()
        train = setting(model.body, "train") if model else None
        data = setting_value(train.body, "data") if isinstance(train, ast.BlockSetting) else None
        while isinstance(data, ast.Attribute):
            data = data.value
        name = data.id if isinstance(data, ast.Name) else ""
        return self.names.columns(self.names.labels_dataset(name) or name)

    # ---- datasets, labels, constraints ---------------------------------------------------

    def dataset(self) -> None:
        nested = self.cursor.nested
        columns = self.names.columns(self.cursor.item_name)
        if not nested:
            self.settings(s.DATASET, "dataset")
        elif nested[0] == "schema" and len(nested) > 1:  # `name: type { option = … }`
            self.settings(s.COLUMN, "column")
        elif nested[0] == "schema":
            self.schema_field(columns)
        elif nested[0] == "clean":
            self.clean_rule(columns)
        elif nested[0] == "split" and re.search(r"\bby\b", self.statement):
            self.expression_names(columns)

    def schema_field(self, columns: list[str]) -> None:
        """`name: type @tag = derived`: types after `:`, tags after `@`, expressions after `=`."""
        if ":" not in self.statement:
            return
        after = self.statement.split(":", 1)[1]
        words = after.split()
        if "=" in after:
            self.items.words(s.DERIVED_COLUMNS, CK.Keyword, "derived column")
            self.expression_names(columns)
        elif words and words[-1].startswith("@") and not after.endswith(" "):
            self.items.words(tuple(s.COLUMN_TAGS), CK.Keyword, "tag")
        elif len(words) == 0 or (len(words) == 1 and not after.endswith(" ")):
            self.items.words(s.COLUMN_TYPES, CK.TypeParameter, "column type")
        else:
            self.items.words(tuple(f"@{t}" for t in s.COLUMN_TAGS), CK.Keyword, "tag")

    def clean_rule(self, columns: list[str]) -> None:
        words = self.statement.split()
        if self.one_word:
            self.items.words(CLEAN_RULES, CK.Keyword, "cleaning rule")
        elif words[0] in ("drop", "keep") and "where" in words:
            self.expression_names(columns)
        elif words[0] == "redact" and "in" not in words:
            self.items.words(s.PII_KINDS, CK.EnumMember, "kind of personal data")
        elif words[0] == "normalize" and ":" in self.statement:
            self.items.words(s.NORMALIZATIONS, CK.EnumMember, "normalization")
        else:
            if words[0] in ("drop", "keep") and len(words) == 1:
                self.items.words(("where",), CK.Keyword)
            self.items.words(columns, CK.Field, "column")

    def labels(self) -> None:
        words = self.statement.split()
        if self.one_word:
            self.settings(s.LABELS, "labels")
        elif words[0] == "lf" and "->" in self.statement:
            self.items.words(self.names.classes(self.cursor.item_name), CK.EnumMember, "class")
        elif words[0] == "lf" and ":" in self.statement:
            header = self.cursor.blocks[0].split()
            dataset = header[3].split(".")[0] if len(header) > 3 else ""
            self.expression_names(self.names.columns(dataset))
        else:
            self.settings(s.LABELS, "labels")

    def expression_names(self, columns: list[str] | None = None) -> None:
        self.items.words(columns or [], CK.Field, "column")
        for name, (params, result, what) in FUNCTIONS.items():
            self.items.add(
                name,
                CK.Function,
                f"({', '.join(params)}) -> {result}: {what}",
                f"{name}($0)",
                snippet=True,
            )
        self.items.symbols(self.names.of_kind("let"))

    def gated(self) -> bool:
        """The constraint being written is a quality or fairness gate (it has an interval)."""
        head = re.match(r"\s*(\w+)", self.statement)
        form = FORMS.get(head.group(1)) if head else None
        return form is not None and form.kind in ("quality", "fairness")

    def constraint(self) -> None:
        if self.one_word:
            for name, form in FORMS.items():
                self.items.add(name, CK.Property, f"{form.kind}: {form.example}")
            self.items.words(
                [f"latency.{stat}" for stat in LATENCY_STATS], CK.Property, "latency percentile"
            )
            self.items.words(("no_pii in", "license allows", "license in"), CK.Property, "policy")
        elif re.search(r"\bon\s+\S*$", self.statement):
            self.references(("hardware",))
            self.data_refs(labels_ok=False)
        elif re.search(r"\bwith\s+\w*$", self.statement):
            self.items.words(("confidence",), CK.Keyword, "with confidence 95%")
        elif re.search(r"\bon\s+\S+\s+\w*$", self.statement) and self.gated():
            self.items.add(
                "with confidence",
                CK.Snippet,
                "pass only if the whole interval at this confidence clears the bound",
                "with confidence ${1:95%}",
                snippet=True,
            )
        elif self.statement.startswith("no_pii"):
            self.items.words(FLOW_SINKS, CK.EnumMember, "where personal data must not flow")
        elif self.statement.startswith("license allows"):
            self.items.words(s.BASE_MODEL["license_allows"].values, CK.EnumMember)  # type: ignore[attr-defined]
