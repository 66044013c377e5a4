"""The training knobs that move memory, lowered and run on the tiny causal LM: the
TrainingArguments each knob yields, full and selective checkpointing, packing, the chunked
loss, master weights, the optimizer step in the backward pass, the refusals with their
codes, and the measured memory peak in run/report.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from fmlang.api import check_text, compile_spec
from fmlang.backends.train.adapter import attach_adapter
from fmlang.backends.train.data import Examples, pack_examples
from fmlang.backends.train.job import BaseWeights, Columns, MemorySettings, TrainJob
from fmlang.backends.train.loader import load_model
from fmlang.backends.train.losses import chunked_causal_lm_loss
from fmlang.backends.train.trainer import train
from fmlang.errors import StageError
from fmlang.ir.nodes import Spec
from fmlang.lower.train_job import lower_job
from fmlang.lower.training import lower_training
from tests.data_helpers import run_spec

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}

SPEC = """
import std.models.tiny_causal_lm
import std.hardware.cpu_2core

dataset qa {
  source jsonl("qa.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
  }
  split { train 80%, test 20% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train {
    data       = qa.train
    prompt     = question
    completion = answer
    max_steps  = 2
    batch      = 4
    hardware   = cpu_2core
EXTRA
  }
}
"""


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    rows = [{"q": f"Question: what is {i} plus {i}?", "a": f" Answer: {2 * i}."} for i in range(32)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    return folder


def tiny_job(
    model: Path, data: Path, output: Path, memory: dict[str, Any] | None = None, **args: Any
) -> TrainJob:
    training = {"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
                "seed": 3, "logging_steps": 1, "save_steps": 100, **args}  # fmt: skip
    return TrainJob(
        model="tiny",
        task="generate",
        base=BaseWeights(kind="local", location=str(model)),
        adapter_config=LORA,
        training_args=training,
        train_data=str(data / "train.parquet"),
        columns=Columns(prompt="q", completion="a"),
        max_seq=32,
        output_dir=str(output),
        memory=MemorySettings(**(memory or {})),
    )


def lowered(extra: str) -> tuple[Spec, dict[str, Any], dict[str, Any]]:
    result = check_text(SPEC.replace("EXTRA", extra), file="t.fm", base=Path("."), verify=True)
    assert result.ok, result.diagnostics
    assert result.report is not None
    spec = compile_spec(result)
    knobs = dict(result.report.knobs)
    plan = lower_training(spec, spec.models[0], knobs)
    return spec, plan.training_args, lower_job(spec, spec.models[0], knobs)["memory"]


# ---- lowering -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("checkpointing = full", {"gradient_checkpointing": True,
                                  "gradient_checkpointing_kwargs": {"use_reentrant": False}}),
        ("checkpointing = selective", {"gradient_checkpointing": True}),
        ("checkpointing = offload", {"gradient_checkpointing": True}),
        ("compile = true", {"torch_compile": True}),
        ("optimizer = adamw_fused", {"optim": "adamw_torch_fused"}),
        ("optimizer = paged_adamw_8bit", {"optim": "paged_adamw_8bit"}),
        ("optimizer = sgd", {"optim": "sgd"}),
        ("optimizer_in_backward = true", {"max_grad_norm": 0.0}),
        ("weights_dtype = bf16", {"bf16": True}),
    ],
)  # fmt: skip
def test_each_knob_lowers_to_training_arguments(
    extra: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import TrainingArguments

    _, args, _ = lowered(extra)
    for key, value in expected.items():
        assert args[key] == value, key
    if "compile" not in extra and "8bit" not in extra:
        TrainingArguments(output_dir=str(tmp_path), **{**args, "use_cpu": True, "bf16": False})


def test_no_knob_adds_no_argument() -> None:
    _, args, memory = lowered("")
    assert "gradient_checkpointing" not in args and "torch_compile" not in args
    assert args["max_grad_norm"] == 1.0
    assert memory == {
        "weights_dtype": "fp32", "master_weights": "fp32", "optimizer": "adamw",
        "optimizer_in_backward": False, "checkpointing": "off", "attention": None,
        "packing": False, "chunked_loss": False, "sharding": "ddp", "offload": "none",
        "compile": False, "quantize": "none", "double_quant": False,
    }  # fmt: skip


def test_memory_knobs_reach_the_build_folders_job() -> None:
    text = (
        "packing = true\n    chunked_loss = true\n    attention = eager\n    master_weights = none"
    )
    _, _, memory = lowered(text)
    assert memory["packing"] and memory["chunked_loss"]
    assert memory["attention"] == "eager" and memory["master_weights"] == "none"


def test_packing_on_a_classifier_is_refused_at_lowering() -> None:
    spec, _, _ = lowered("")
    model = spec.models[0]
    assert model.training is not None and model.task is not None
    classify = model.model_copy(
        update={
            "task": model.task.model_copy(update={"kind": "classify", "classes": ("a", "b")}),
            "training": model.training.model_copy(update={"packing": True}),
        }
    )
    with pytest.raises(StageError) as caught:
        lower_training(spec, classify, {})
    assert caught.value.diagnostics[0].code == "FM0808"


# ---- the executor ---------------------------------------------------------------------


def layer_flags(model: Any) -> list[bool]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m.gradient_checkpointing for m in model.modules()
            if isinstance(m, GradientCheckpointingLayer)]  # fmt: skip


def flag_recorder(seen: list[list[bool]]) -> Any:
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append(layer_flags(kwargs["model"]))

    return Record()


@pytest.mark.parametrize(("mode", "flags"), [("full", [True, True]), ("selective", [True, False])])
def test_checkpointing_full_and_selective(
    mode: str, flags: list[bool], tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    seen: list[list[bool]] = []
    args = {"gradient_checkpointing": True,
            "gradient_checkpointing_kwargs": {"use_reentrant": False}}  # fmt: skip
    job = tiny_job(tiny_model, qa_data, tmp_path, {"checkpointing": mode}, **args)
    result = train(job, progress=False, callbacks=(flag_recorder(seen),))
    assert result.steps == 4 and seen and all(step == flags for step in seen)


def test_offloaded_checkpoints_train(tiny_model: Path, qa_data: Path, tmp_path: Path) -> None:
    args = {"gradient_checkpointing": True}
    job = tiny_job(tiny_model, qa_data, tmp_path, {"checkpointing": "offload"}, **args)
    assert train(job, progress=False).final_loss is not None


def test_packed_rows_are_exactly_the_training_length(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    rows = tuple({"input_ids": list(range(1, n + 1)), "labels": [-100, *range(2, n + 1)]}
                 for n in (5, 9, 3, 14, 7))  # fmt: skip
    packed = pack_examples(Examples(rows, tuple(range(5)), 0), 8, eos=2)
    assert len(packed) == (5 + 9 + 3 + 14 + 7 + 4) // 8  # four examples lack the EOS
    assert all(len(r["input_ids"]) == len(r["labels"]) == 8 for r in packed.rows)
    job = tiny_job(tiny_model, qa_data, tmp_path, {"packing": True})
    result = train(job, progress=False)
    assert result.steps == 4 and 0 < result.train_rows < 32


def test_chunked_loss_equals_the_models_loss(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (3, 29), generator=generator)
    labels = ids.clone()
    labels[:, :7] = -100
    labels[1, 20:] = -100
    expected = model(input_ids=ids, labels=labels).loss
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    got = chunked_causal_lm_loss(hidden, model.lm_head, labels)
    assert abs(got.item() - expected.item()) < 1e-5
    items = (labels[:, 1:] != -100).sum() * 2  # as under two accumulated micro-batches
    halved = chunked_causal_lm_loss(hidden, model.lm_head, labels, num_items=items)
    assert abs(halved.item() - expected.item() / 2) < 1e-5


def test_chunked_loss_trains(tiny_model: Path, qa_data: Path, tmp_path: Path) -> None:
    plain = train(tiny_job(tiny_model, qa_data, tmp_path / "a"), progress=False)
    chunked = tiny_job(tiny_model, qa_data, tmp_path / "b", {"chunked_loss": True})
    result = train(chunked, progress=False)
    for (_, a), (_, b) in zip(plain.loss_curve, result.loss_curve, strict=True):
        assert a == pytest.approx(b, rel=1e-4)


def test_chunked_loss_trains_under_mixed_precision(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    """bf16 weights with bf16 autocast: accelerate hands the hidden states back in fp32,
    and the chunked loss casts each slice to the head's dtype (found on an H200 run)."""
    memory = {"chunked_loss": True, "weights_dtype": "bf16", "master_weights": "fp32"}
    job = tiny_job(tiny_model, qa_data, tmp_path, memory, bf16=True, use_cpu=True)
    result = train(job, progress=False)
    assert result.steps == 4 and all(loss == loss for _, loss in result.loss_curve)


@pytest.mark.parametrize(("master", "dtype"), [("none", torch.bfloat16), ("fp32", torch.float32)])
def test_master_weights_set_the_adapter_dtype(
    master: str, dtype: torch.dtype, tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    memory = {"weights_dtype": "bf16", "master_weights": master}
    job = tiny_job(tiny_model, qa_data, tmp_path, memory)
    model = attach_adapter(job, load_model(job))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == dtype for p in trainable)
    assert model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16


def test_attention_kernel_is_the_one_asked_for(tiny_model: Path, tmp_path: Path) -> None:
    job = tiny_job(tiny_model, tmp_path, tmp_path, {"attention": "eager"})
    assert load_model(job).config._attn_implementation == "eager"


def test_optimizer_in_backward_matches_the_usual_step(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    common = {"max_grad_norm": 0.0, "weight_decay": 0.01}
    train(tiny_job(tiny_model, qa_data, tmp_path / "a", **common), progress=False)
    job = tiny_job(tiny_model, qa_data, tmp_path / "b", {"optimizer_in_backward": True}, **common)
    train(job, progress=False)
    usual = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    fused = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert usual.keys() == fused.keys()
    for key in usual:
        assert torch.allclose(usual[key], fused[key], atol=1e-5), key
    assert not torch.equal(usual[next(iter(usual))], _initial(tiny_model, tmp_path))


def test_optimizer_in_backward_lets_the_model_go(tiny_model: Path, tmp_path: Path) -> None:
    """The hooks that step each parameter hold its optimizer and so the parameter: after
    training they are removed and the model is freed (on an H200 6.97 GiB stayed allocated
    after such a run before this)."""
    import gc
    import weakref

    from transformers import TrainingArguments

    from fmlang.backends.train.data import Collator
    from fmlang.backends.train.executor import executor_trainer_class

    job = tiny_job(tiny_model, tmp_path, tmp_path)
    model = attach_adapter(job, load_model(job))
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]} for _ in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, max_grad_norm=0.0,
        report_to="none", save_strategy="no", per_device_train_batch_size=2,
        remove_unused_columns=False,
    )  # fmt: skip
    trainer_cls = executor_trainer_class("generate", MemorySettings(optimizer_in_backward=True))
    trainer = trainer_cls(model=model, args=args, train_dataset=rows, data_collator=Collator(0))
    trainer.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(not p._post_accumulate_grad_hooks for p in params)
    alive = weakref.ref(params[0])
    del trainer, model, params
    gc.collect()
    assert alive() is None


def _initial(tiny_model: Path, tmp_path: Path) -> torch.Tensor:
    job = tiny_job(tiny_model, tmp_path, tmp_path / "init")
    model = attach_adapter(job, load_model(job))
    from peft import get_peft_model_state_dict

    return next(iter(get_peft_model_state_dict(model).values()))


def test_optimizer_in_backward_resumes(tiny_model: Path, qa_data: Path, tmp_path: Path) -> None:
    job = tiny_job(tiny_model, qa_data, tmp_path, {"optimizer_in_backward": True},
                   save_steps=2, max_grad_norm=0.0)  # fmt: skip
    train(job, progress=False)
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert len(state["inner"]) == 8  # q and v, A and B, two layers


@pytest.mark.parametrize(
    ("memory", "args", "code", "absent"),
    [
        ({"optimizer": "adamw_8bit"}, {}, "FM0832", "bitsandbytes"),
        ({"quantize": "nf4"}, {}, "FM0832", "bitsandbytes"),
        ({"attention": "flash"}, {}, "FM0832", "flash_attn"),
        ({"quantize": "gptq"}, {}, "FM0834", None),
        ({"offload": "optimizer"}, {}, "FM0835", None),
        ({"optimizer_in_backward": True}, {"gradient_accumulation_steps": 2}, "FM0836", None),
    ],
)
def test_refusals_come_before_any_work(
    memory: dict[str, Any],
    args: dict[str, Any],
    code: str,
    absent: str | None,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    if absent is not None and importlib.util.find_spec(absent) is not None:
        pytest.skip(f"{absent} is installed here")
    missing = tmp_path / "no-data"  # never read: the refusal comes first
    with pytest.raises(StageError) as caught:
        train(tiny_job(tiny_model, missing, tmp_path / "out", memory, **args), progress=False)
    assert [d.code for d in caught.value.diagnostics] == [code]
    assert not (tmp_path / "out").exists()


# ---- fmc run ----------------------------------------------------------------------------


def project(tmp_path: Path, tiny_model: Path, extra: str) -> Path:
    (tmp_path / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "question": f"what is {i} plus {i}?", "answer": f"it is {2 * i}."}
            for i in range(30)]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = tmp_path / "helper.fm"
    spec.write_text(SPEC.replace("EXTRA", extra), encoding="utf-8")
    return spec


def cli_run(spec: Path, build: Path) -> Any:
    from click.testing import CliRunner

    from fmlang.cli.main import cli

    return CliRunner().invoke(
        cli, ["run", str(spec), "-o", str(build), "--as", "team:ml", "--format", "json"]
    )


def test_report_has_measured_and_predicted_memory(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "checkpointing = full")
    result = cli_run(spec, tmp_path / "build")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "build" / "run" / "report.json").read_text())
    (stage,) = [s for s in report["stages"] if s["stage"] == "train:helper"]
    measured, predicted = stage["memory"]["measured"], stage["memory"]["predicted"]
    # on CPU: torch's own allocations over the first steps, beside the resident set
    assert measured["metric"] == "allocated" and measured["peak"] == measured["peak_allocated"]
    assert measured["peak_rss_increase"] > 0
    assert predicted["hardware"] == "cpu_2core" and predicted["allocated"] > 0
    # the budget at the longest row is an upper bound for the padded batches that ran
    assert measured["peak"] <= predicted["allocated"] * 1.15
    # the terms read off the model and optimizer equal the predicted ones (fp32 tiny model,
    # LoRA in fp32, AdamW's two moments)
    for term in ("weights", "trainable", "optimizer"):
        got, want = measured["terms"][term], predicted["per_device"][term]
        assert got == pytest.approx(want, rel=0.02), term


def test_a_refusal_exits_1_with_its_code(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "offload = optimizer")
    result = cli_run(spec, tmp_path / "build")
    assert result.exit_code == 1, result.output
    codes = [d["code"] for d in json.loads(result.stdout)["diagnostics"]]
    assert codes == ["FM0835"]
    assert "Traceback" not in result.output


def test_run_in_process_records_memory(tmp_path: Path, tiny_model: Path) -> None:
    spec = project(tmp_path, tiny_model, "")
    report = run_spec(spec, tmp_path / "build", until="train")
    summary = report.outcomes[-1].summary
    assert summary["memory"]["measured"]["peak"] > 0
