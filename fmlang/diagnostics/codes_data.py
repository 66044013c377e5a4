"""Diagnostic codes FM07xx: data pipelines, labeling functions, the label model, access and audit.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

DATA_CODES: dict[str, Code] = {
    "FM0701": Code(
        "data source matches no files",
        "A dataset's `source` path or glob matched nothing when the data stage ran. Paths "
        "are relative to the folder of the spec that declares the dataset.",
        io=True,
    ),
    "FM0702": Code(
        "access denied",
        "The principal running the stage (`--as` or FMC_PRINCIPAL) holds no grant for what "
        "the stage does with the dataset: `read` for its data stage, `label` to label it, "
        "`train` to train on it. The refusal is recorded in the audit log.",
    ),
    "FM0703": Code(
        "no principal for restricted data",
        "The dataset declares grants, so every stage that reads it must know who runs it. "
        "Pass `--as PRINCIPAL` or set FMC_PRINCIPAL.",
    ),
    "FM0704": Code(
        "schema column missing from the data",
        "A column the schema declares (and that is not derived with `=`) is not in the "
        "source files. Column names are case-sensitive.",
    ),
    "FM0705": Code(
        "data step failed",
        "DuckDB rejected a step of the data pipeline, usually a type that does not fit the "
        "data. The generated SQL is in the build folder under data/.",
    ),
    "FM0706": Code(
        "Python labeling function failed",
        'A `python("module:function")` labeling function could not be imported, raised an '
        "exception, or returned something other than a class name or None.",
    ),
    "FM0707": Code(
        "audit log tampered with",
        "`fmc audit verify` found an entry whose hash, link to the previous entry or "
        "sequence number is wrong: the log was edited after it was written.",
    ),
    "FM0708": Code(
        "cannot read the audit log",
        "The audit log does not exist or cannot be read. It is `audit.log` in the build "
        "folder unless FMC_AUDIT_LOG names another file.",
        io=True,
    ),
    "FM0709": Code(
        "expression has no SQL form",
        "The expression checks, but the SQL lowering cannot express it. Rewrite it with "
        "the functions listed in the reference, or use a Python labeling function.",
    ),
    "FM0710": Code(
        "stage input missing",
        "A stage needs the output of an earlier stage that has not run. Run the earlier "
        "stage first (`fmc run FILE --until labels` runs everything up to labels).",
        io=True,
    ),
    "FM0750": Code(
        "labeling function never fires",
        "The labeling function voted on none of the rows it was applied to, so it adds "
        "nothing to the label model. Check its pattern against a few rows of the data (case, "
        "spelling, the column it reads), or remove it.",
    ),
    "FM0751": Code(
        "labeling function less accurate than chance",
        "On the rows with a gold label, the labeling function is right less often than votes "
        "unrelated to the label would be (the same mix of votes, scored against the gold class "
        "shares). Its target class is often inverted, or its pattern matches the other class.",
    ),
    "FM0752": Code(
        "labeling function contradicts the others",
        "Where the other labeling functions agree on a class, this one votes differently on "
        "most rows. Without gold labels this is the best sign of an inverted or broken "
        "function; check its target class, or add a gold column to measure its accuracy.",
    ),
}
