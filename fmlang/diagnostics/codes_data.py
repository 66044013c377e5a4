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
        "sequence number is wrong, or an entry other than the one the head (or `--expect`) "
        "records: the log was edited after it was written.",
    ),
    "FM0708": Code(
        "cannot read the audit log",
        "The audit log does not exist or cannot be read. `fmc audit verify` checks "
        "`audit.log` in the build folder, or the copy FMC_AUDIT_LOG names when it is set.",
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
    "FM0711": Code(
        "audit log truncated",
        "The log holds fewer entries than its head (`LOG.head`, rewritten after every append) "
        "or `--expect` records: entries were cut from its end. Keep both files as evidence; "
        "move both aside and the next run starts a new log.",
    ),
    "FM0712": Code(
        "audit log deleted",
        "The head `LOG.head` records entries but the log beside it is gone. Restore the log "
        "from a backup, or keep the head as evidence and move it aside to start a new log.",
    ),
    "FM0713": Code(
        "audit log continues past its head",
        "The log holds entries (or an incomplete last line) after the last one its head "
        "records, and no interrupted append explains them: they were written by something "
        "other than fmc. Keep both files as evidence and move them aside to start a new log.",
    ),
    "FM0714": Code(
        "audit head missing or invalid",
        "The log has entries but no head `LOG.head` (deleted, or written by an fmc that kept "
        "none), or the head is not one fmc wrote. Without it a truncated log cannot be told "
        "from a whole one. Keep the files as evidence and move them aside to start a new log.",
    ),
    "FM0715": Code(
        "audit signature does not verify",
        "With FMC_AUDIT_KEY set, every entry and the head must carry a valid HMAC-SHA256 under "
        "that key. One is unsigned, signed with another key, or its MAC is wrong: it was "
        "written or re-chained by someone without the key.",
    ),
    "FM0716": Code(
        "audit key does not fit the log",
        "FMC_AUDIT_KEY is too short, or does not match how the log was started: a signed log "
        "needs its key to be appended to or verified, and an unsigned log is never mixed with "
        "signed entries. Set the log's key, or move the log and its head aside to start anew.",
        io=True,
    ),
    "FM0717": Code(
        "audit append interrupted",
        "A crash or a full disk stopped an append part-way: the head lists the entries it was "
        "writing, and the log holds some of them or a torn last line. Not tampering; the next "
        "append completes it, moving a torn line to `LOG.torn` and recording that in the log.",
    ),
    "FM0718": Code(
        "cannot write the audit log",
        "Appending to the audit log or replacing its head failed (a full disk, permissions). "
        "The data access it would record does not happen; the next run completes whatever "
        "part of the append reached the disk.",
        io=True,
    ),
    "FM0720": Code(
        "build folder artifact missing or unreadable",
        "`fmc run` executes the build folder: each stage reads the artifacts `fmc build` "
        "wrote (train/<model>/job.json, the adapter config and training arguments it names, "
        "merges/<merge>.json). One is missing or is not valid JSON, usually because it was "
        "deleted or edited by hand. Run `fmc build` again, or delete fm.lock.json so that "
        "`fmc run` rebuilds the folder.",
        io=True,
    ),
    "FM0721": Code(
        "build folder in use by another run",
        "Another `fmc run` holds the build folder's lock (run.lock): two runs would write the "
        "same stage outputs, checkpoints and cache. Wait for it, or pass `--wait` to queue "
        "behind it. The lock dies with its process, so a killed run never leaves it held.",
        io=True,
    ),
    "FM0722": Code(
        "cannot write a run's output",
        "A stage could not write one of its outputs, a training checkpoint or the stage "
        "cache: the disk is full, a quota is reached, or the folder is read-only. Nothing "
        "half-written is used later: a stage counts as done only once every output is "
        "recorded with its sha256, and a checkpoint only once its marker is. Free space (or "
        "fix the permissions) and run the same command again; it resumes where it stopped.",
        io=True,
    ),
    "FM0730": Code(
        "data source outside the project at run time",
        "Just before reading, the data stage found that the dataset's source leads outside "
        "the project folder (the entry spec's folder) and the folders allowed with "
        "`--allow-data` or FMC_DATA_DIRS: a path, a `..`, or a symlink, resolved now. "
        "`fmc check` refuses the same source as FM0319; this one means the files changed "
        "since (a file or folder replaced by a symlink). The denial is in the audit log. Move "
        "the data into the project folder, or allow its folder on the command line.",
    ),
    "FM0731": Code(
        "principal cannot be verified",
        "FMC_PRINCIPAL_TOKEN is not a token signed with the key in FMC_PRINCIPAL_KEY_FILE, "
        "has expired, or names another principal than `--as`; or `--as os` runs under a uid "
        "with no login name. Every stage is denied, and each denial is in the audit log. Get "
        "a fresh token from its issuer, or run as your OS account (`--as os`).",
    ),
    "FM0732": Code(
        "principal key missing or unusable",
        "A token was given but its key cannot be used: FMC_PRINCIPAL_KEY_FILE is unset, the "
        "file cannot be read, holds fewer than 16 bytes, or is open to other users (anyone "
        "who can read the key can issue tokens for anyone). Point FMC_PRINCIPAL_KEY_FILE at "
        "the issuer's key and `chmod 600` it.",
        io=True,
    ),
    "FM0733": Code(
        "unverified principal refused",
        "Verified principals are required (FMC_REQUIRE_VERIFIED_PRINCIPAL=1 or `fmc run "
        "--require-verified`), and the principal is only asserted with `--as NAME` or "
        "FMC_PRINCIPAL. Run as your OS account (`--as os`, granted in the spec as "
        "`user:LOGIN`) or with a signed token in FMC_PRINCIPAL_TOKEN.",
    ),
    "FM0740": Code(
        "values did not convert to the schema",
        "A stored value that is present (not empty) did not convert to its column's type, "
        "or a label column's value is none of its classes (names in any case, or 0-based "
        "indices), so it would have become NULL silently: often a wrong type in the schema "
        "(`priority: date` on integers) or a class missing from `label[…]`. The message "
        "counts them per column with up to three examples. Fix the type or the classes, or "
        "say what such values do with `{ on_cast_error = null }` (keep the row, NULL the "
        "value) or `{ on_cast_error = drop }` (drop the row); the rule report counts them "
        "either way (`cast_nulls` in report.json).",
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
    "FM0760": Code(
        "label model worse than majority vote",
        "Against the dataset's @gold labels, on the rows the label model labels, majority vote "
        "(ties broken by a fair coin) is right on more of them than the label model, by more "
        "than chance allows (two standard errors of the paired difference), or, without "
        "gold, the label model's labels contradict "
        "majority vote on most rows where it has a strict winner. The labels are not "
        "written: the labeling functions break the model's assumptions (duplicated or "
        "correlated functions, functions worse than chance). Check the analysis table, fix "
        "or remove the flagged functions, or use `model majority`. Before failing, the stage "
        "refits once with `prior = uniform` (unless the block already says so); when that "
        "fit passes the same check, the help names it.",
    ),
    "FM0761": Code(
        "label model did not converge",
        "EM stopped at `epochs` iterations while some row's class probability still moved "
        "by more than `tolerance` between iterations; the labels are written but may change "
        "with more iterations. Raise `epochs` (or loosen `tolerance`) in `model "
        "label_model(...)`.",
    ),
    "FM0762": Code(
        "label model class prior collapsed",
        "EM's estimate of the class mix all but dropped a class that majority vote gives a "
        "share of the rows, the sign of a fit that explains the votes with one class. The "
        "model was refitted with majority vote's class mix as a fixed prior; check the "
        "labeling functions of that class, or set `prior = uniform`.",
    ),
    "FM0765": Code(
        "Spark engine not installed",
        "`fmc run --engine spark` needs pyspark (4.1 or later), which is not installed in "
        "fmc's environment. Install it with `pip install 'fmlang[spark]'`, or run on the "
        "default engine (`--engine duckdb`).",
        io=True,
    ),
    "FM0766": Code(
        "Spark cannot start",
        "The local Spark session did not start: Java (17 or later) is missing (set JAVA_HOME "
        "or put `java` on PATH), or the JVM failed; Spark's own log (run/spark.log in the "
        "build folder) says why.",
        io=True,
    ),
    "FM0767": Code(
        "Spark step failed",
        "Spark rejected or failed a step of the data pipeline or the label-matrix query, "
        "usually a type that does not fit the data. The generated Spark SQL is in the build "
        "folder (data/<dataset>.spark.sql, labels/<labels>.spark.sql) and Spark's log in "
        "run/spark.log.",
    ),
    "FM0770": Code(
        "no gold labels to learn from",
        "`fmc label suggest` learns labeling functions from rows with a gold label, and the "
        "labels block's dataset has no `label[…]` column tagged `@gold`. Tag the column that "
        "holds the known labels `@gold`, and label a few dozen rows of the data the block "
        "labels.",
        io=True,
    ),
    "FM0771": Code(
        "too few gold-labelled rows",
        "`fmc label suggest` needs a sample of at least 4 gold-labelled rows, half to choose "
        "functions on and half to confirm them; the data has fewer, or `--sample` asks for "
        "fewer. Label more rows (50 is a good start), or raise `--sample`.",
        io=True,
    ),
    "FM0772": Code(
        "no rule removed this row",
        "`fmc data review --keep ID` names a row that no cleaning rule of the dataset removed "
        "(or an id the dataset does not have), so there is no rule to make an exception on. "
        "Pass an id from the rows `fmc data review` lists as removed.",
        io=True,
    ),
    "FM0773": Code(
        "a dedupe removal cannot be kept",
        "`fmc data review --keep ID` names a row an exact `dedupe` rule removed, or one a "
        "`dedupe … near` rule removed whose text equals an earlier row's. A dedupe rule has "
        "no per-row exceptions (the row kept in its place would change), and no `near` "
        "threshold keeps an identical text (a near rule's removals are otherwise kept by "
        "raising its threshold). Deduplicate on more columns, or remove the rule.",
        io=True,
    ),
    "FM0774": Code(
        "forget file changed since the check",
        "The data stage runs the forget requests the spec was checked and built with, and "
        "the forget file no longer holds that text (or cannot be read). Run `fmc run` "
        "again: it checks the file as it is and rebuilds the pipeline from it.",
        io=True,
    ),
    "FM0775": Code(
        "forget request removed nothing",
        "A forget request applied for the first time matched no row of its dataset: an "
        "`@id` value that is not in the data, or a condition that holds for no row. Check "
        "the request; it stays applied and is recorded in the audit log either way.",
    ),
    "FM0776": Code(
        "the generative model cannot be loaded",
        "`fmc label suggest --propose-with MODEL` loads a causal language model and its "
        "tokenizer from a folder, or from the local cache for a hub id (nothing is "
        "downloaded), and neither had one, or its config names no generative architecture "
        "(`…ForCausalLM`, `…LMHeadModel`: an encoder such as MiniLM would write noise). Pass "
        "the folder a generative model was saved to, or download it first; without "
        "`--propose-with`, no model is used.",
        io=True,
    ),
}
