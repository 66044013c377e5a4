"""Diagnostic codes FM08xx: adapters, training, evaluation gates, merging and the registry.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

TRAIN_CODES: dict[str, Code] = {}

# ---- FM0801-FM0819: adapter configs, training arguments and launch configs ----
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
    }
)

# ---- FM0840-FM0859: merging adapters and the adapter registry ----
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
    }
)
