"""Training and evaluation examples from the data and labels stages' parquet files.

Reading checks the job's columns against the file and turns each row into token ids:
classify rows carry a class index or a probability vector (soft labels), generate rows carry
labels that mask the prompt with -100 so the loss covers completion tokens only;
`pack_examples` packs them into full rows of the training length. `Collator`
pads each batch to its own longest row (dynamic padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlang.backends.train.job import TrainJob
from fmlang.diagnostics import error
from fmlang.errors import StageError

IGNORE_INDEX = -100


def read_table(job: TrainJob, path: str, what: str) -> dict[str, list[Any]]:
    """The parquet file's columns as Python lists; a StageError if it cannot be read."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.read_table(Path(path)).to_pydict())
    except (OSError, ValueError) as exc:
        raise StageError(
            error(
                "FM0822",
                f"cannot read the {what} at {path}",
                job.span("train.data" if what == "training data" else "eval"),
                f"the {what} comes from here",
                help="run the data and labels stages first (`fmc run`), or fix the path",
                notes=(f"{type(exc).__name__}: {exc}",),
            )
        ) from exc


def require_columns(
    job: TrainJob, table: dict[str, list[Any]], names: list[str], what: str
) -> None:
    """A StageError naming each column the job uses that `table` lacks."""
    missing = [name for name in names if name not in table]
    if missing:
        raise StageError(
            error(
                "FM0823",
                f"the {what} has no column {', '.join(f'`{m}`' for m in missing)}",
                job.span("train.input", "train.data"),
                "this column is read from it",
                help=f"its columns are: {', '.join(sorted(table))}",
            )
        )


def label_target(job: TrainJob, value: Any, row: int) -> int | list[float] | None:
    """A class index for a class name, a probability vector for a list, None when missing."""
    if value is None:
        return None
    if isinstance(value, list):
        return _soft_target(job, value, row)
    if value in job.classes:
        return job.classes.index(value)
    raise _bad_label(job, f"row {row} has label {value!r}, which is not one of the classes")


def _soft_target(job: TrainJob, value: list[Any], row: int) -> list[float] | None:
    if any(p is None for p in value):
        return None
    probs = [float(p) for p in value]
    if len(probs) != len(job.classes):
        raise _bad_label(
            job, f"row {row} has {len(probs)} label probabilities for {len(job.classes)} classes"
        )
    total = sum(probs)
    if total <= 0 or any(p < 0 or math.isnan(p) for p in probs):
        raise _bad_label(job, f"row {row} has label probabilities {probs}, not a distribution")
    return [p / total for p in probs]


def _bad_label(job: TrainJob, message: str) -> StageError:
    return StageError(
        error(
            "FM0824",
            message,
            job.span("train.data", "task"),
            "labels for this model",
            help=f"labels must be one of {', '.join(job.classes)} (or one probability per "
            "class, in that order)",
        )
    )


@dataclass(frozen=True)
class Examples:
    """Tokenized rows ready for a DataLoader, their positions in the table, and how many
    rows were left out."""

    rows: tuple[dict[str, Any], ...]
    indices: tuple[int, ...]
    skipped: int

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def classify_examples(
    job: TrainJob,
    tokenizer: Any,
    table: dict[str, list[Any]],
    label: str,
    require: tuple[str, ...] = (),
) -> Examples:
    """Rows with their label target; rows without a label (or with a null `require` column)
    are left out, as Snorkel's filter_unlabeled_dataframe does."""
    text = job.columns.input
    assert text is not None
    require_columns(job, table, [text, label, *require], "data")
    targets, kept = [], []
    for i, value in enumerate(table[label]):
        target = label_target(job, value, i)
        missing = table[text][i] is None or any(table[c][i] is None for c in require)
        if target is not None and not missing:
            targets.append(target)
            kept.append(i)
    texts = [str(table[text][i]) for i in kept]
    encoded = tokenizer(texts, truncation=True, max_length=job.max_seq)["input_ids"]
    rows = tuple({"input_ids": ids, "labels": t} for ids, t in zip(encoded, targets, strict=True))
    return Examples(rows, tuple(kept), len(table[label]) - len(kept))


def generate_examples(job: TrainJob, tokenizer: Any, table: dict[str, list[Any]]) -> Examples:
    """Prompt + completion + EOS, truncated to `max_seq`, with the prompt masked out of the
    labels. Rows whose completion is empty or truncated away are left out."""
    prompt_col, completion_col = job.columns.prompt, job.columns.completion
    assert prompt_col is not None and completion_col is not None
    require_columns(job, table, [prompt_col, completion_col], "data")
    rows, kept = [], []
    for i, (prompt, completion) in enumerate(
        zip(table[prompt_col], table[completion_col], strict=True)
    ):
        row = _prompt_completion(job, tokenizer, prompt, completion)
        if row is not None:
            rows.append(row)
            kept.append(i)
    return Examples(tuple(rows), tuple(kept), len(table[prompt_col]) - len(kept))


def _prompt_completion(
    job: TrainJob, tokenizer: Any, prompt: Any, completion: Any
) -> dict[str, Any] | None:
    if prompt is None or not completion:
        return None
    head = tokenizer(str(prompt), add_special_tokens=True)["input_ids"]
    tail = tokenizer(str(completion), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        tail = [*tail, tokenizer.eos_token_id]
    ids = (head + tail)[: job.max_seq]
    labels = ([IGNORE_INDEX] * len(head) + tail)[: job.max_seq]
    if all(t == IGNORE_INDEX for t in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def pack_examples(examples: Examples, length: int, eos: int | None) -> Examples:
    """The examples' tokens end to end (an EOS between two examples where one does not
    already end with it, not trained on) cut into rows of exactly `length` tokens; the
    tokens after the last full row are dropped. Prompt tokens stay masked out of the loss.
    `indices` become the packed rows' own positions."""
    ids: list[int] = []
    labels: list[int] = []
    for row in examples.rows:
        ids += row["input_ids"]
        labels += row["labels"]
        if eos is not None and row["input_ids"][-1] != eos:
            ids.append(eos)
            labels.append(IGNORE_INDEX)
    count = len(ids) // length
    rows = tuple(
        {"input_ids": ids[i * length : (i + 1) * length],
         "labels": labels[i * length : (i + 1) * length]}
        for i in range(count)
    )  # fmt: skip
    return Examples(rows, tuple(range(count)), examples.skipped)


@dataclass(frozen=True)
class Collator:
    """Pads a batch to its longest row; integer labels stay class indices, float lists
    become a probability matrix, token labels are padded with -100."""

    pad_id: int

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in batch)
        ids = [row["input_ids"] + [self.pad_id] * (width - len(row["input_ids"])) for row in batch]
        mask = [
            [1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in batch
        ]
        out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        labels = [row["labels"] for row in batch]
        if isinstance(labels[0], list) and isinstance(labels[0][0], float):
            out["labels"] = torch.tensor(labels, dtype=torch.float32)
        elif isinstance(labels[0], list):
            out["labels"] = torch.tensor([t + [IGNORE_INDEX] * (width - len(t)) for t in labels])
        else:
            out["labels"] = torch.tensor(labels)
        return out
