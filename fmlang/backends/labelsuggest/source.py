"""Suggested labeling functions as a reviewable `.fm` file.

The file imports the spec and declares one labels block, `<labels>_suggested`, on the same
data, with the same classes, and the original block's other statements (its `model`,
`apply_to` and grants, as written), so it checks and runs as it is; every function carries
its measured figures as a comment. The patterns a restricted function excludes (another
class's first-round functions) are declared once, as `let <class>_marks = /…/`, and named in
each function that excludes them. The text is passed through `fmc fmt` before it is returned.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fmlang.backends.labelsuggest.candidates import Candidate
from fmlang.backends.labelsuggest.select import Scored
from fmlang.backends.labelsuggest.suggest import Suggestion
from fmlang.fmt import format_text
from fmlang.ir.expr import RegexLit


def block_name(labels: str, taken: Iterable[str]) -> str:
    names = set(taken)
    name, n = f"{labels}_suggested", 2
    while name in names:
        name, n = f"{labels}_suggested_{n}", n + 1
    return name


def render(suggestion: Suggestion, spec: Path, out: Path, kept: list[str], name: str,
           taken: Iterable[str] = ()) -> str:  # fmt: skip
    """The `.fm` text. `kept`: the original block's statements other than its functions and
    classes, as written; `taken`: names the `let` declarations must not reuse."""
    labels = suggestion.labels
    data = f"{labels.dataset}.{labels.split}" if labels.split else labels.dataset
    settings = suggestion.settings
    command = f"fmc run {out.name} --until labels"
    lines = [
        f"# Labeling functions `fmc label suggest` proposes for labels `{labels.name}`, from",
        f"# {suggestion.fit_rows + suggestion.held_rows} gold-labelled rows of {data} "
        f"(seed {settings.seed}), in halves of {suggestion.fit_rows} and "
        f"{suggestion.held_rows}.",
        "# Each function's comment: rows it is right on / fires on, in each half of the",
        f"# sample, the share of all {suggestion.rows:,} rows of {data} it fires on, and",
        "# its precision: estimated on all rows where the functions chosen first can",
        "# measure it and the sample does not refute it (then the sample may see it on few",
        "# rows or none), else the 95% lower bound of its accuracy on the sample (then a",
        "# keyword must be right on most of its rows in each half).",
        f"# Keep the ones you trust, delete the rest; copy them into `{labels.name}`, or run",
        f"# this block as it is: `{command}`.",
        "",
        f'import "{_relative(spec, out)}"',
        "",
    ]
    marks = _marks([s.candidate for s in suggestion.chosen], {*taken, name})
    for (label, regex), mark in marks.items():
        lines.append(
            f"# What `{label}`'s functions match: `…_unless_{label}` leaves those rows alone."
        )
        lines.append(f"let {mark} = /{regex.pattern}/{regex.flags}")
    if marks:
        lines.append("")
    lines += [
        f"labels {name} on {data} {{",
        f"  classes [{', '.join(labels.classes)}]",
        "",
    ]
    for scored in suggestion.chosen:
        lines.append(f"  # {_figures(scored)}")
        target = labels.classes[scored.target]
        source = _named(scored.candidate, suggestion.column, marks)
        lines.append(f"  lf {scored.candidate.name}: {source} -> {target}")
    if kept:
        lines.append("")
        lines.extend(f"  {statement}" for statement in kept)
    lines.append("}")
    text = "\n".join(lines) + "\n"
    formatted = format_text(text, str(out))
    assert formatted.text is not None, formatted.diagnostics
    return formatted.text


def _marks(chosen: list[Candidate], taken: set[str]) -> dict[tuple[str, RegexLit], str]:
    """A `let` name for each distinct pattern the chosen functions exclude: `spam_marks`,
    `spam_marks_2` (a second set of flags), avoiding `taken`."""
    out: dict[tuple[str, RegexLit], str] = {}
    for candidate in chosen:
        for regex in candidate.excludes:
            key = (candidate.unless, regex)
            if key not in out:
                name, n = f"{candidate.unless}_marks", 2
                while name in taken or name in out.values():
                    name, n = f"{candidate.unless}_marks_{n}", n + 1
                out[key] = name
    return out


def _named(candidate: Candidate, column: str, marks: dict[tuple[str, RegexLit], str]) -> str:
    """The candidate's source with each excluded pattern written as its `let` name."""
    source = candidate.source
    for regex in candidate.excludes:
        inline = f" and {column} !~ /{regex.pattern}/{regex.flags}"
        source = source.replace(inline, f" and {column} !~ {marks[(candidate.unless, regex)]}")
    return source


def _figures(scored: Scored) -> str:
    sample = (
        f"sample {scored.fit_correct}/{scored.fit_fires} and "
        f"{scored.held_correct}/{scored.held_fires}, coverage {scored.coverage:.1%}, "
    )
    if scored.estimate is not None:
        return sample + f"estimated precision {scored.estimate:.2f} on all rows"
    return sample + f"accuracy lower bound {scored.lower_bound:.2f}"


def _relative(spec: Path, out: Path) -> str:
    return Path(os.path.relpath(spec.resolve(), out.resolve().parent)).as_posix()
