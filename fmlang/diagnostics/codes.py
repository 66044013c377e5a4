"""Every diagnostic code, append-only: a title, its exit class and a longer explanation."""

from __future__ import annotations

from fmlang.diagnostics.code import Code
from fmlang.diagnostics.codes_data import DATA_CODES
from fmlang.diagnostics.codes_report import REPORT_CODES
from fmlang.diagnostics.codes_serve import SERVE_CODES
from fmlang.diagnostics.codes_train import TRAIN_CODES

__all__ = ["CODES", "Code", "is_io"]


CODES: dict[str, Code] = {
    "FM0001": Code(
        "cannot read a file",
        "The file does not exist, is a directory, a named pipe or a device (fmc reads "
        "regular files only), or cannot be read. Pass the path of a `.fm` file.",
        io=True,
    ),
    "FM0002": Code(
        "not a UTF-8 text file",
        "Specs are UTF-8 text. The file contains a NUL byte "
        "or bytes that are not valid UTF-8. Re-save it as UTF-8.",
    ),
    "FM0003": Code(
        "file too large",
        "A single spec may be at most 16 MiB. Split large specs "
        'into files joined with `import "file.fm"`.',
    ),
    "FM0004": Code(
        "not a spec file",
        "A file given to fmc that is not named `*.fm` and whose first token does not begin a "
        "declaration (`import`, `dataset`, `model`, …) is not a spec. fmc names the file "
        "but shows none of its text, so a diagnostic never prints another kind of file. "
        "Pass the spec itself.",
    ),
    "FM0101": Code(
        "unexpected token",
        "The parser found something it did not expect at this "
        "point. The message lists what may come next; the help line suggests the "
        "likely fix.\n\n    constraints m { accuracy = 0.9 }   # wrong\n"
        "    constraints m { accuracy >= 0.9 on data.test }   # right",
    ),
    "FM0102": Code(
        "unexpected character",
        "A character that cannot start any token, such as "
        "`$` or a single quote. Strings use double quotes; logic uses `and`, `or`, "
        "`not`.",
    ),
    "FM0103": Code(
        "unexpected end of file",
        "The file ends before a construct is complete, "
        "usually a block whose `{` is never closed. The second label points at the "
        "unclosed `{`.",
    ),
    "FM0104": Code(
        "unterminated string or regex",
        'A string (`"…"`) or regex (`/…/`) must '
        'close on the line it opens. Escape a quote as `\\"` and a slash as `\\/`.',
    ),
    "FM0105": Code(
        "unknown word",
        "A word appears where only keywords are allowed, usually a "
        "misspelt declaration such as `datset`. The label suggests the closest one.",
    ),
    "FM0106": Code(
        "nested too deeply",
        "Expressions or lists are nested deeper than the compiler supports. Flatten them.",
    ),
    "FM0107": Code(
        "keyword used as a name",
        "A keyword appears where a name is expected. Pick "
        "another name, e.g. add a trailing underscore.",
    ),
    "FM0108": Code(
        "bidirectional control character",
        "The text holds an invisible Unicode direction control (U+202A-U+202E, "
        "U+2066-U+2069). Inside a string or a comment it makes editors and code review show "
        'a line in another order than fmc reads it ("Trojan Source"). Delete it; '
        "right-to-left text displays correctly without it.",
    ),
    "FM0201": Code(
        "unknown module",
        "`import std.X` names a standard-library module that does "
        "not exist. Modules: std.models, std.hardware, std.labeling. Files are "
        'imported with a string: `import "team_a.fm"`.',
    ),
    "FM0202": Code(
        "imported file not found",
        '`import "file.fm"` resolves relative to the importing file; that file cannot be read.',
    ),
    "FM0203": Code(
        "import cycle",
        "Files import each other in a cycle. Move what they share "
        "into a third file that both import.",
    ),
    "FM0204": Code(
        "name not in module",
        "`import std.models.{x}` names something the module "
        "does not define. The help line lists what it does define.",
    ),
    "FM0205": Code(
        "duplicate declaration",
        "Two declarations in one file share a name, or a "
        "declaration shadows an import. Every dataset, labels, model, merge, "
        "base_model, hardware and let needs its own name.",
    ),
    "FM0206": Code(
        "spec declares nothing",
        "The file holds no declaration and imports no spec file (only standard-library "
        "entries, or nothing), so there is nothing to check, verify or build. Add a dataset, "
        "labels, model, merge, constraints or deploy block, or delete the file. (A file "
        'of `import "other.fm"` lines is fine: it builds those files together.)',
    ),
    "FM0207": Code(
        "import of a file that is not a spec",
        '`import "…"` names a file that does not end in `.fm` (after symlinks are followed). '
        "fmc imports specs only and does not read the file. Rename the spec to `*.fm`, or "
        "remove the import.",
    ),
    "FM0208": Code(
        "too many or too large imports",
        "A spec and everything it imports are read together, at most 1,000 files and 64 MiB "
        "in all (each file at most 16 MiB). Check the parts separately, or import less.",
    ),
    "FM0301": Code(
        "unknown setting",
        "A block contains a setting it does not accept. The help "
        "line suggests the closest valid setting or lists them all.",
    ),
    "FM0302": Code(
        "wrong kind of value",
        "A setting got the wrong kind of value: a name where "
        "a number is needed, a block where a value is needed, and so on.",
    ),
    "FM0303": Code(
        "wrong or missing unit",
        "Quantities carry units written without a space: "
        "`30ms`, `2GiB`, `900GB/s`, `312TFLOPS`, `4.5USD/h`, `20req/s`, `5%`. The "
        "unit must match the dimension the setting or constraint measures.",
    ),
    "FM0304": Code(
        "value out of range",
        "A number lies outside the range its setting allows, "
        "for example a dropout above 1 or an empty replica range.",
    ),
    "FM0305": Code(
        "set twice", "A setting, argument or block appears twice where it may appear once."
    ),
    "FM0306": Code(
        "`auto` not allowed",
        "Only knobs the solver can choose accept `auto`: "
        "adapter rank and alpha, batch size, sequence length, quantization, replicas, "
        "resident adapters. `base` and `adapter` take `auto in [...]` with a list of "
        "candidates and `select by` (model selection), which `fmc run` trains and compares.",
    ),
    "FM0307": Code(
        "unknown choice",
        "A setting takes one of a fixed set of names (an adapter "
        "kind, a merge method, an optimizer, …) and got another.",
    ),
    "FM0308": Code(
        "bad arguments",
        "A call such as `lora(...)` got an argument it does not "
        "take, or the wrong number of positional arguments.",
    ),
    "FM0310": Code(
        "bad column type",
        "Column types are string, text, int, float, bool, "
        "category, label[…], date and timestamp. `label` lists its classes.",
    ),
    "FM0311": Code("unknown tag", "Column tags are @id, @pii, @protected and @gold."),
    "FM0312": Code("duplicate column", "A schema declares the same column twice."),
    "FM0313": Code(
        "unknown PII kind", "`redact` takes pii (all kinds), email, phone, url, ip and card."
    ),
    "FM0314": Code(
        "unknown normalization",
        "`normalize COL: …` takes lower, trim, "
        "collapse_whitespace, nfkc, strip_html and strip_accents.",
    ),
    "FM0315": Code(
        "bad split",
        "Split shares are percentages or fractions that add up to 100%, "
        "each split is named once, and `by` gives the deterministic key.",
    ),
    "FM0316": Code(
        "dataset without source",
        "Every dataset says where its rows come from: "
        '`source csv("data/*.csv")`, jsonl, json, parquet, files or hf_disk.',
    ),
    "FM0317": Code(
        "dataset without schema",
        "Every dataset declares the columns it uses, at least one, in a "
        "`schema { name: type @tags }` block.",
    ),
    "FM0318": Code("unknown permission", "Grants give read, label, train, deploy or query."),
    "FM0319": Code(
        "data source outside the project",
        "A dataset's source reads outside the project folder (the folder of the spec given "
        "to fmc): an absolute path, a `..`, or a symlink that leads elsewhere (symlinks and "
        "`..` are resolved, for the folder the path starts from and for every file it "
        "matches). Move the data into the project folder, or allow its folder where the spec "
        "cannot: `fmc check/build/plan/run --allow-data DIR` (repeatable) or FMC_DATA_DIRS "
        "(folders separated by the OS path separator).",
    ),
    "FM0320": Code(
        "bad classes",
        "A labels block declares at least two distinct classes: `classes [ham, spam]`.",
    ),
    "FM0321": Code(
        "labeling function without class",
        "A labeling function votes for a class: "
        '`lf name: condition -> class`, except a `python("mod:fn")` LF that returns '
        "the class itself. A labels block needs at least one LF.",
    ),
    "FM0322": Code(
        "type mismatch in expression",
        "An expression combines values of the wrong "
        "types: text compared with a number, `~` without a regex, `and` on a "
        "non-condition. Use length(col) or words(col) to measure text.",
    ),
    "FM0323": Code(
        "bad regex flag",
        "A regex literal ends with a flag fmc does not know. The flags are i (ignore case), "
        "m (multi-line `^` and `$`), s (`.` matches a newline) and x (spaces and `#` "
        "comments ignored).",
    ),
    "FM0324": Code(
        "unknown function",
        "Expressions may call length, words, lower, upper, trim, "
        "contains_any, starts_with, ends_with, count and hash, with their arities.",
    ),
    "FM0325": Code("duplicate labeling function", "Each LF in a labels block needs its own name."),
    "FM0326": Code(
        "bad Python reference", 'A Python LF is referenced as `python("package.module:function")`.'
    ),
    "FM0330": Code(
        "model without base or task",
        "A model names its `base` model and its `task` (classify(labels), generate or embed).",
    ),
    "FM0331": Code(
        "unknown adapter target",
        "Adapter `targets` must be module names of the "
        "base model (its `modules` fact), e.g. `query`, `value` for BERT or "
        "`q_proj`, `v_proj` for Llama.",
    ),
    "FM0332": Code(
        "task does not fit the base model", "An encoder-only base model cannot generate text."
    ),
    "FM0333": Code(
        "length beyond the base model",
        "A model's `max_seq`, its training `seq_len` and the `max_seq` of a deployment "
        "serving it are at most the base model's `max_seq`: positions past it were never "
        "trained (or do not exist).",
    ),
    "FM0334": Code(
        "full fine-tuning of a quantized base",
        "Quantized weights (int8, nf4, fp4, gptq, awq) have no gradients; train an adapter on "
        "them (QLoRA) or fine-tune the unquantized base.",
    ),
    "FM0335": Code(
        "incomplete hardware profile",
        "The cost model reads a profile's `memory` (as the device reports it), `bandwidth` and "
        "peak compute (`peak_bf16` or `peak_fp32`); it never substitutes a default.",
    ),
    "FM0336": Code(
        "packing or chunked loss without a token loss",
        "`packing` and `chunked_loss` act on a causal LM's token loss; classifiers and "
        "embedders have none.",
    ),
    "FM0337": Code(
        "training without data",
        "A `train { … }` block trains the model, and a training job needs its data: "
        "`data = dataset.split` (or a dataset, or a labels block) and the columns the task "
        "reads. Without `data` the build cannot write the job (FM0805). Add `data`, or remove "
        "the train block when the model is used as it is.",
    ),
    "FM0338": Code(
        "DP-SGD without an epsilon",
        "`dp { … }` asks for differentially private training, whose noise is calibrated to "
        "the privacy budget `epsilon`. Without it the run refuses (FM0837) while the verifier "
        "would already count the model as private. Add `epsilon = N` (and usually `delta`), "
        "or remove the `dp` block.",
    ),
    "FM0339": Code(
        "incomplete base model",
        "The cost model reads a base model's `kind`, `params`, `layers`, `hidden`, `heads` "
        "and `vocab` and never substitutes a default: a guessed architecture would make "
        "every memory, latency and cost verdict wrong. Copy them from the model's "
        "config.json (stdlib/models.fm shows how each maps).",
    ),
    "FM0340": Code("incomplete merge", "A merge names at least two `models` and a `method`."),
    "FM0341": Code("merge weights mismatch", "A merge gives exactly one weight per model."),
    "FM0342": Code(
        "merged models adapt different base models",
        "A LoRA update is a change to the weights it was trained against, so a merge "
        "combines adapters of one base model: the same weights and revision. Two bases that "
        "share a tokenizer (the same vocabulary) are still different weights, and bases of "
        "different sizes do not even have layers of the same shape. Train every merged "
        "model on one base, or merge only the models that share it.",
    ),
    "FM0343": Code(
        "adapter cannot be merged",
        "Merging combines LoRA weight updates. DoRA (whose magnitude vectors do not "
        "combine), IA3, prefix and prompt tuning, full fine-tuning and a model without an "
        "adapter have none to combine. Give every merged model `adapter lora(...)`, or "
        "serve the models side by side instead of merging them.",
    ),
    "FM0344": Code(
        "merged adapters target different modules",
        "A merge adds the parents' weight updates module by module, so every merged model "
        "wraps the same modules. Give them all the same `targets = [...]`.",
    ),
    "FM0345": Code(
        "merged adapters have different ranks",
        "`linear`, `task_arithmetic`, `ties`, `dare_ties`, `dare_linear` and "
        "`magnitude_prune` make an adapter of the parents' common rank, so every merged "
        "model needs the same fixed `rank`. Use one rank, or `cat` (the ranks add up) or "
        "`svd(rank = N)`, which accept different ranks. A rank left `auto` is tied to the "
        "others by the verifier instead (FM0606 when no allowed value matches).",
    ),
    "FM0346": Code(
        "merged models do different tasks",
        "A merged adapter is loaded, evaluated and served for one task, so its models do "
        "the same task. Classifiers cannot be merged at all: each trains its classification "
        "head in full, and a whole trained module has no low-rank update to combine. Merge "
        "generative or embedding models, or train one classifier on the combined labels.",
    ),
    "FM0347": Code(
        "unknown `with` clause on a constraint",
        "A constraint may end in `with confidence LEVEL` and nothing else after `with`. "
        "Write `accuracy >= 0.9 on data.test with confidence 95%`.",
    ),
    "FM0348": Code(
        "confidence level out of range",
        "`with confidence` takes a percentage strictly between 50% and 100% (or the "
        "fraction, 0.95): the probability that the interval the gate checks holds the "
        "true value. Write 90%, 95% or 99%.",
    ),
    "FM0349": Code(
        "confidence on a constraint without an interval",
        "Only the gates a run measures on evaluation rows (accuracy, precision, recall, "
        "f1, macro_f1, perplexity and max_gap) come with a confidence interval; memory, "
        "latency, cost, privacy and license constraints have none to check. Remove "
        "`with confidence` from this constraint.",
    ),
    "FM0350": Code(
        "unknown constraint",
        "Constraints are bounds fmc can check: memory, "
        "latency.pNN, throughput (`on` hardware); cost, gpu_hours; accuracy, "
        "precision, recall, f1, macro_f1, perplexity and max_gap(metric, by = col) "
        "(`on` an evaluation split); dp_epsilon (`on` a dataset); `no_pii in "
        "training_data|models|endpoints|outputs`; `license allows commercial` and "
        '`license in ["…"]`.',
    ),
    "FM0351": Code(
        "malformed constraint",
        "The constraint's metric is known but written "
        "wrongly: the wrong direction (`>=` for memory), a latency without its "
        "statistic, or max_gap without its metric and group.",
    ),
    "FM0352": Code(
        "constraint `on` clause",
        "Hardware-bound constraints need `on HARDWARE`; "
        "quality and fairness need `on dataset.split`; a DP budget needs `on "
        "dataset`; cost, privacy-flow and license constraints take no `on`.",
    ),
    "FM0353": Code(
        "unknown PII flow sink", "`no_pii in` names training_data, models, endpoints or outputs."
    ),
    "FM0354": Code(
        "malformed license constraint",
        'Write `license allows commercial` (or research) or `license in ["apache-2.0", "mit"]`.',
    ),
    "FM0355": Code(
        "fisher_mask without a density",
        "A `fisher_mask` adapter trains the fraction of the base model's parameters with the "
        "largest Fisher information, and that fraction is the whole method: write it, e.g. "
        "`adapter fisher_mask(density = 0.5%)`.",
    ),
    "FM0356": Code(
        "fisher_mask density selects nothing",
        "The density times the base model's parameter count is below one, so no parameter "
        "would train. Raise the density (the message gives the least that selects one).",
    ),
    "FM0357": Code(
        "fisher_mask model deployed",
        "The serving runtimes load a base model and PEFT adapters; a `fisher_mask` update is a "
        "sparse diff of the base's own weights, which they do not load. Deploy a model with a "
        "LoRA adapter instead; `fmc run` still trains and evaluates the fisher_mask model.",
    ),
    "FM0358": Code(
        "fisher_mask merge method",
        "Models whose adapters are all `fisher_mask` merge as sparse diffs, by `method ties`: "
        "the diffs add exactly where they do not overlap, and where they do the sign with the "
        "larger summed magnitude wins and the agreeing values are averaged. They are sparse "
        "already, so TIES' trimming (`density`) and the other methods are refused.",
    ),
    "FM0359": Code(
        "setting not supported with fisher_mask",
        "A fisher_mask model trains in fmc's own FishMask loop: AdamW, no intermediate "
        "checkpoints, one device, in the base weights' own dtype, without DP-SGD, "
        "quantization, packing or a chunked loss. Remove the setting the diagnostic points "
        "at, or train the model with a LoRA adapter.",
    ),
    "FM0360": Code(
        "deployment without target",
        "A deploy block names at least one target: local, kserve, kubernetes or compose.",
    ),
    "FM0370": Code(
        "block does nothing",
        "The block is empty, or lacks the one setting that makes it do anything: a "
        "`clean { }` without rules, a `split { }` without splits, a `constraints` block "
        "without bounds, an `eval` without `on`. Add what it is for, or remove it.",
    ),
    "FM0371": Code(
        "setting has no effect",
        "Nothing reads this setting for this model: a column the task does not train on, "
        "`epochs` beside `max_steps` (which overrides it), `double_quant` without 4-bit "
        "quantization, `sharding` over one device, an evaluation setting or metric the "
        "task does not use, `eval` on a model that is never trained, adapter-serving "
        "settings where no adapter is loaded. Remove it, or change what makes it "
        "ineffective; the message says which.",
    ),
    "FM0372": Code(
        "training does not name the columns its task reads",
        "A classifier (or embedding model) trains on `input`, and on `target` unless its "
        "data is a labels block; a generative model trains on `prompt` and `completion`. "
        "A warning, since a spec that is only verified may leave them out, but `fmc run` "
        "cannot train without them: name each in the `train` block.",
    ),
    "FM0373": Code(
        "model selection without candidates to choose from",
        "A model that selects its base lists the candidates, `base auto in [minilm_l6, "
        "other_model]` (a bare `auto` or a range names none), each once, and says how one is "
        "picked: `select by accuracy on DATASET.SPLIT`; so does one that selects its adapter, "
        "`adapter auto in [lora(rank = 8), fisher_mask(density = 0.5%)]`. Add the list, or "
        "the `select by` line.",
    ),
    "FM0374": Code(
        "`select by` on a model with one base",
        "`select by` picks among the candidates `base auto in [...]` or `adapter auto in "
        "[...]` lists; this model names one base and one adapter, so there is nothing to "
        "choose. List the candidates, or remove the `select by` line.",
    ),
    "FM0375": Code(
        "base candidate cannot do the model's task",
        "Every candidate of `base auto in [...]` must be able to train the model as written: "
        "an encoder cannot `generate`, and the adapter's `targets` must be modules of each "
        "candidate. Remove the candidate the diagnostic names, or change the task or the "
        "targets so that every candidate fits.",
    ),
    "FM0376": Code(
        "base candidate dropped by the static constraints",
        "The verifier checked each candidate of `base auto in [...]` (or `adapter auto in "
        "[...]`) against the model's memory, latency, throughput, cost and license "
        "constraints, and its deployment (no server loads a fisher_mask diff), and this one "
        "cannot meet them under any choice of the `auto` knobs; the note gives the constraint "
        "and the numbers. "
        "`fmc run` does not train it. Nothing to fix unless you want it considered: relax the "
        "constraint, or remove the candidate.",
    ),
    "FM0377": Code(
        "no base candidate meets the static constraints",
        "Every candidate of `base auto in [...]` fails the model's memory, latency, "
        "throughput, cost or license constraints (the notes give each candidate's reason), "
        "so there is nothing to train. Add a smaller candidate, relax the constraint, or pick "
        "larger hardware.",
    ),
    "FM0378": Code(
        "selection objective the run cannot measure",
        "`select by METRIC on DATASET.SPLIT` compares the candidates on what evaluation "
        "reports: the split must be one the model's `eval { on = [...] }` lists, and the "
        "metric one its task produces (`accuracy`, `f1`, `macro_f1` for classifiers; "
        "`perplexity` and `loss` for generative models, where the lowest wins). Fix the "
        "metric or the split, or add the split to `eval`.",
    ),
    "FM0379": Code(
        "merge of a model that selects its base",
        "A model with `base auto in [...]` has no single base until `fmc run` trains its "
        "candidates and picks one, and a merge needs its parents on one base with compatible "
        "adapters, proven before any compute is spent. (A deployment of such a model is "
        "fine: it serves the winner.) Run `fmc run` (which names the winner), then pin the "
        "model's base to it and merge that.",
    ),
    "FM0380": Code(
        "label-model setting that does nothing",
        "The label model is fitted by expectation-maximisation, which has no learning rate, "
        "so `lr` would be accepted and ignored; and its fit draws no random numbers, so "
        "`seed` only settles ties under `tie = random`. Remove the setting (or add `tie = "
        "random` for `seed`); the fit is controlled by `epochs` (most iterations), "
        "`tolerance`, `smoothing`, `prior` and `better_than_chance`.",
    ),
    "FM0381": Code(
        "forget file cannot be read",
        'A dataset\'s `forget "FILE"` names its file of forget requests, and the file is '
        "missing, is not a regular UTF-8 file, is larger than 16 MiB, or lies outside the "
        "project (and the folders `--allow-data` allows). Write the path relative to the "
        "spec's folder; create the file (an empty one is fine) before naming it.",
    ),
    "FM0382": Code(
        "not a forget request",
        "Each non-blank line of a forget file is one JSON object with `request` (an id, "
        "unique in the file), `by` (who asked), `at` (an ISO 8601 date or time) and exactly "
        "one of `ids` (a non-empty list of `@id` values) or `where` (a condition); `reason` "
        "is optional. Fix the line the diagnostic points at.",
    ),
    "FM0383": Code(
        "forget by id without an `@id` column",
        "A forget request lists `ids`, and its dataset's schema tags no column `@id`, so "
        "there is nothing to match them against. Tag the column that identifies rows `@id`, "
        "or remove the rows by a `where` condition instead.",
    ),
    "FM0384": Code(
        "forget condition does not parse",
        "A forget request's `where` must be one condition in the expression language of "
        '`drop where` (for example `AUTHOR == "Jo"`), over the dataset\'s columns. Fix the '
        "condition at the place the diagnostic points at.",
    ),
    "FM0385": Code(
        "regex outside the RE2 dialect",
        "Spec regexes are RE2 syntax with RE2's meaning on every engine (docs/reference.md, "
        "Regular expressions). This pattern is not: Python- or PCRE-only syntax such as "
        "lookarounds `(?=…)`, backreferences `\\1` and `(?P=x)`, atomic groups `(?>…)`, "
        "possessive `a*+` or `\\Z` (RE2 writes `\\z`), an unbalanced group or class, a "
        "repetition count over 1000, or what fmc leaves out (`\\C`, `\\B`, the `U` "
        "flag). The message gives RE2's reason and the span the offending part; rewrite it, "
        "or move the logic into a Python labeling function.",
    ),
    "FM0386": Code(
        "`count` with a regex that can match the empty string",
        "`count(text, /re/)` counts matches; a pattern that can match the empty string "
        "(`a*`, `\\b`, `^`) also matches between characters, and engines count those "
        "positions differently (DuckDB by bytes, Spark by UTF-16 units). Make every match "
        "take at least one character (`a+` instead of `a*`).",
    ),
    "FM0387": Code(
        "column option that does not apply",
        "A column's `{ … }` options describe how a stored column is read: `on_cast_error` "
        "(fail, null or drop) and `from` (the dotted path of a JSON field). They do not apply "
        "to a computed column (`name: type = expression`), `from` only applies to `json` and "
        "`jsonl` sources, and its value is field names joined by dots (`data.text`). Remove "
        "the option, or change the column or the source.",
    ),
    "FM0388": Code(
        "data source matches no files",
        "`fmc check` found no file for the dataset's source: the path or glob (relative to "
        "the folder of the spec that declares the dataset) matches nothing, or for "
        "`hf_disk` no folder. Check the path and the glob, or put the data there. If files "
        "vanish between `fmc check` and `fmc run`, the run reports FM0701.",
    ),
    "FM0389": Code(
        "schema column not in the source files",
        "A column the schema reads from the source (not computed with `=`) is not in the "
        "first matching file: not in a CSV's header, not a field of the first JSON record "
        "(at its `from` path), not a Parquet column. Only headers and metadata are read. "
        "Rename the column to the one the data has (the message suggests one), give its "
        'field path with `{ from = "a.b" }`, or fix the data.',
    ),
    "FM0390": Code(
        "schema type does not match the source",
        "The first matching file holds values of another kind for this column than its "
        "schema type can read: numbers for a `date`, dates for an `int`, nested records or "
        "lists for a number (from JSON records or Parquet metadata; text is cast at run "
        "time, where FM0740 counts what does not convert). Declare the type the data has, "
        'or read a field inside a nested record with `{ from = "a.b" }`.',
    ),
    "FM0392": Code(
        "deployment of a selection model with no candidate left",
        "A deployment serves a model with `base auto in [...]`, and the verifier dropped "
        "every candidate (FM0377 says why), so `fmc run` trains nothing to serve. Add a "
        "candidate that meets the constraints, or relax them.",
    ),
    "FM0393": Code(
        "vLLM target of a model that selects its base",
        "vLLM (a `kserve`, `kubernetes` or `compose` target on a GPU profile) loads the base "
        "model its manifest names, and a model with `base auto in [...]` has its base chosen "
        "only when `fmc run` trains the candidates. Deploy it on a CPU profile or `local`ly, "
        "where `fmc serve` reads the selected candidate from the registry when it starts, or "
        "pin the base to the winner `fmc run` names.",
    ),
    "FM0395": Code(
        "too few rows for an accuracy gate to mean anything",
        "`fmc check` counted the rows of the gate's split (a local csv or jsonl source of at "
        "most 8 MiB: its rows times the split's share) or of each group of a `max_gap(accuracy, "
        "by = ...)` gate, and even a perfect score's confidence interval on that many rows "
        "is wider than the range of values that pass. No model can pass or fail the gate for a "
        "reason: one or two rows decide it. Evaluate on more rows, group more coarsely, or "
        "loosen the bound. `fmc run` reports the measured interval (FM0862).",
    ),
    "FM0396": Code(
        "labels applied to their own data or twice",
        "`apply_to` lists the split the labels block is fitted on (its labelled rows are "
        "the block's own output already), or lists one split twice. List only other splits "
        "or datasets, each once.",
    ),
    "FM0397": Code(
        "applied labels read a column the data lacks",
        "A dataset in `apply_to` has no column a labeling function reads, or has it with "
        "another type, so the functions cannot run on it. Give the dataset that column with "
        "the same type (a derived column `name: type = expression` works), or remove the "
        "dataset from `apply_to`.",
    ),
    "FM0398": Code(
        "split file pattern matches no source file",
        'A split that follows files (`train "train.json"`) names a file-name pattern that '
        "none of the files the dataset's source reads matches, so the split would be empty. "
        "Fix the name (patterns match file names, `*` and `?` as wildcards), or widen the "
        "source's path so that it reads the file.",
    ),
    "FM0399": Code(
        "malformed split by files",
        "A split block gives every split a share (`train 80%`) or every split its source "
        'files (`train "train.json"`), not a mix; a split by files takes no `by` (each '
        "row's file decides its split), and its patterns are file names without folders. "
        "Rewrite the block in one of the two forms.",
    ),
    "FM0401": Code(
        "unknown name",
        "A reference names nothing declared in this file or "
        "imported into it. Import stdlib entries (`import std.models.minilm_l6`) and "
        'files (`import "other.fm"`) before using their names.',
    ),
    "FM0402": Code(
        "wrong kind of declaration",
        "A reference names a declaration of the wrong "
        "kind, e.g. a dataset where a base model is needed.",
    ),
    "FM0403": Code(
        "unknown column",
        "An expression or rule names a column that is not in the "
        "dataset's schema, or was dropped by an earlier cleaning rule.",
    ),
    "FM0404": Code("unknown split", "`dataset.split` names a split the dataset does not declare."),
    "FM0405": Code(
        "unknown class", "A labeling function votes for a class not listed in `classes`."
    ),
    "FM0406": Code(
        "source file in no split",
        "The dataset's splits follow its source files, and no split's pattern matches this "
        "file, so its rows are in the dataset's `all` output but in no split. Add the file "
        "to a split, or narrow the source's path so that it does not read the file.",
    ),
    "FM0601": Code(
        "resource constraints cannot be met",
        "The cost model shows that no allowed "
        "choice of the `auto` knobs meets these memory, latency, throughput or cost "
        "bounds together. Every conflicting line is labelled (an unsat core); the "
        "note gives the best value any choice reaches and the help line the "
        "smallest bound change that makes the spec feasible. Widen an `auto` domain, "
        "quantize, pick other hardware or relax a bound.",
    ),
    "FM0602": Code(
        "personal data reaches a protected sink",
        "A column tagged @pii survives "
        "cleaning (it is neither dropped nor redacted) and flows into a model's "
        "training data, a model or a public endpoint that a `no_pii` constraint or "
        "`visibility public` protects. Drop or redact the column, or train with "
        "`dp { epsilon = … }`.",
    ),
    "FM0603": Code(
        "DP budget exceeded",
        "The models trained on a dataset spend more epsilon in "
        "total than its `epsilon_budget` or a `dp_epsilon` constraint allows.",
    ),
    "FM0604": Code(
        "access grants do not cover a path",
        "A principal is granted a permission that a declaration further up its path refuses: "
        "`train` on a model needs `train` on its data (and on its labels block when that "
        "grants `train`); `deploy` on a model needs `deploy` on its data; merging needs "
        "`deploy` on every merged model; `deploy` on an endpoint needs `deploy` on what it "
        "serves. Grant the missing permission upstream, or remove the principal.",
    ),
    "FM0605": Code(
        "license does not allow the use",
        "A base model's license does not permit "
        "the declared use (`license allows commercial`) or is not in the allowed "
        'list (`license in ["…"]`).',
    ),
    "FM0606": Code(
        "incompatible merge",
        "Merged models must adapt the same base model with "
        "adapters of one kind; linear, ties, dare and magnitude_prune merges also "
        "need equal ranks (cat and svd do not). What the spec writes is compared by the "
        "checker (FM0342-FM0346); here the verifier ties ranks left `auto`, and reports "
        "when no allowed rank is common to all the merged models. Widen an `auto in [...]` "
        "or fix the ranks to one value.",
    ),
    "FM0607": Code(
        "adapter rank too large for the runtime",
        "The served adapter's rank (the "
        "sum of ranks for a `cat` merge) exceeds the serving runtime's "
        "`max_lora_rank`.",
    ),
    "FM0608": Code(
        "fairness over an unsuitable column",
        "A fairness constraint groups by a "
        "column that must exist in the evaluation data, be tagged @protected, be "
        "categorical (category or label) and not be the model's input.",
    ),
    "FM0609": Code(
        "solver gave up",
        "Z3 could not decide the constraints within its time "
        "limit. Narrow the `auto` domains and try again.",
    ),
    "FM0610": Code(
        "too many training knobs left to the solver at once",
        "Training memory is tabulated over every combination of the training knobs left "
        "`auto` (batch, seq_len, rank, quantize, checkpointing, optimizer, sharding, "
        "offload). Past MAX_COMBINATIONS the spec is refused rather than left to run for "
        "minutes: fix some of them or narrow them with `auto in [...]`.",
    ),
    "FM0611": Code(
        "nobody may run a stage",
        "Access fails closed: a dataset with no `grant read` can be read by no one, a model "
        "trained on data without `grant deploy` can be deployed by no one, an endpoint "
        "without `grant query` answers no one. A stage needs one principal who holds every "
        "grant along its path (see the reference's Grants section). Add the grant the "
        "message names, for the principal who runs the stage.",
    ),
    "FM0612": Code(
        "deployed classifier without its trained head",
        "The deployment serves a `classify` model that trains without a PEFT adapter. The "
        "server loads the base checkpoint plus the model's adapter, so the fine-tuned weights "
        "never reach it, and a checkpoint without a classification head (an encoder such as "
        "MiniLM) would answer from a randomly initialised one. Give the model a LoRA adapter "
        "(`adapter lora(...)`): peft saves the trained head with it (`modules_to_save`).",
    ),
    "FM0614": Code(
        "internal endpoint on a public address",
        "A deployment is `visibility internal` (the default: reachable from loopback and "
        "private networks only), but a target listens on a public address literal, which "
        "`fmc serve` would refuse to bind (FM1074). Listen on a loopback or private address, "
        "or declare `visibility public`, which serves anyone who can reach the address and "
        "holds the API key of a principal granted `query`.",
    ),
    "FM0901": Code(
        "internal compiler error",
        "fmc itself failed. This is a bug: please report "
        "it with the spec that triggers it. Set FMC_DEBUG=1 for the traceback.",
    ),
    # FM118x: `fmc init` (fmlang/cli/init_cmd.py).
    "FM1180": Code(
        "the project's files already exist",
        "`fmc init` writes a spec, a small dataset and a README, and never overwrites a "
        "file: one of them is already in the folder, so it wrote nothing. Pick an empty "
        "folder (`fmc init DIR`), or move the files it names out of the way.",
        io=True,
    ),
    "FM1181": Code(
        "cannot create the project",
        "`fmc init` could not create the folder or write a file in it (the path is a file, "
        "or the folder is not writable). Pass another folder, or fix its permissions.",
        io=True,
    ),
}

# The execution stages register theirs in their own files (one range each), so that
# work on one stage never edits another's table: FM07xx data and labels, FM08xx training,
# gates and merging, FM10xx serving and manifests, FM116x the run report.
CODES = dict(sorted({**CODES, **DATA_CODES, **TRAIN_CODES, **SERVE_CODES, **REPORT_CODES}.items()))


def is_io(code: str) -> bool:
    entry = CODES.get(code)
    return bool(entry and entry.io)
