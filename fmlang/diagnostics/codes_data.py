"""Diagnostic codes FM07xx: data pipelines, labeling functions, the label model, access and audit.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

DATA_CODES: dict[str, Code] = {
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
