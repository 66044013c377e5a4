"""Training lowering: TrainingArguments keywords that transformers 5 accepts, every `train`
setting mapped; accelerate configs accelerate loads; DeepSpeed configs whose "auto" values
the transformers integration fills; the ZeRO stage rule; torchrun argv torchrun parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.errors import StageError
from fmlang.ir.nodes import Model, Spec
from fmlang.lower.launch import lower_launch, model_files, torchrun_command, torchrun_shell
from fmlang.lower.training import TrainingPlan, lower_training
from fmlang.verify.units import show

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "youtube_spam": (ROOT / "examples/youtube_spam/spam.fm", ["spam_filter"]),
    "support_assistant": (ROOT / "examples/support_assistant/assistant.fm", ["support_assistant"]),
    "adapter_merge": (
        ROOT / "examples/adapter_merge/merge.fm",
        ["billing_assistant", "shipping_assistant"],
    ),
}
SPEC = """
import std.models.{llama3_8b, qwen2_5_0_5b, minilm_l6, tiny_causal_lm}
import std.hardware.cpu_2core

hardware node4 {
  kind      gpu
  devices   4
  memory    80GB
  bandwidth 3.35TB/s
  peak_fp32 67TFLOPS
  peak_bf16 989TFLOPS
  cost      6.90USD/h
}

hardware cpu2 {
  kind      cpu
  devices   2
  cores     2
  memory    16GiB
  bandwidth 20GB/s
  peak_fp32 294GFLOPS
  cost      0.10USD/h
}

hardware small4 {
  kind      gpu
  devices   4
  memory    8GB
  bandwidth 300GB/s
  peak_fp32 30TFLOPS
  peak_bf16 120TFLOPS
  cost      1USD/h
}

dataset docs {
  source jsonl("docs.jsonl")
  schema { id: string @id  q: text  a: text  label: label[no, yes] }
  split { train 90%, test 10% by hash(id) }
  epsilon_budget 8
  grant read, label, train, deploy to "team:ml"
}

labels yesno on docs.train {
  classes [no, yes]
  lf says_yes: lower(q) contains "yes" -> yes
}

model big {
  base    llama3_8b
  task    generate
  adapter full
  train {
    data = docs.train, prompt = q, completion = a,
    epochs = 2, max_steps = 500, lr = 1e-4, batch = 4, grad_accum = 8, seq_len = 1024,
    warmup = 0.1, weight_decay = 0.01, optimizer = OPTIMIZER, precision = bf16, seed = 5,
    checkpoint_every = 100, hardware = node4, devices = DEVICES, sharding = auto,
    checkpointing = auto,
  }
}

model private {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, targets = [q_proj, v_proj])
  train {
    data = docs.train, prompt = q, completion = a, batch = 2,
    dp { epsilon = 4, delta = 1e-6, max_grad_norm = 0.5 }
  }
}

model mid {
  base    qwen2_5_0_5b
  task    generate
  adapter full
  max_seq 128
  train {
    data = docs.train, prompt = q, completion = a, batch = 1, seq_len = 128,
    precision = bf16, hardware = small4, devices = 4, sharding = auto
  }
}

model cls {
  base    minilm_l6
  task    classify(yesno)
  adapter lora(rank = 8, targets = [query, value])
  max_seq 64
  train { data = docs.train, input = q, target = label, seq_len = 256 }
}

model pair {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, targets = [q_proj, v_proj])
  train { data = docs.train, prompt = q, completion = a, batch = 2, hardware = cpu2, devices = 2 }
}

constraints cls { memory <= 1GiB on cpu_2core }
"""


def compiled(optimizer: str = "adamw", devices: int = 4) -> tuple[Spec, dict[str, int | str]]:
    text = SPEC.replace("OPTIMIZER", optimizer).replace("DEVICES", str(devices))
    result = check_text(text, file="t.fm", base=Path("."), verify=True)
    assert result.ok, result.diagnostics
    assert result.report is not None
    return compile_spec(result), dict(result.report.knobs)


def model(spec: Spec, name: str) -> Model:
    found = spec.model(name)
    assert found is not None
    return found


def example(name: str) -> tuple[Spec, dict[str, int | str], Any]:
    path, _ = EXAMPLES[name]
    result = check_text(path.read_text(encoding="utf-8"), file=str(path), base=path.parent)
    from fmlang.api import verify_result

    report = verify_result(result)
    assert result.ok and report is not None, result.diagnostics
    return compile_spec(result), dict(report.knobs), report


def construct(args: dict[str, Any], tmp_path: Path) -> Any:
    """TrainingArguments from the lowered keywords. GPU arguments (bf16 without use_cpu) are
    validated against the machine, so without a GPU they are checked with use_cpu set."""
    import torch

    if not torch.cuda.is_available():
        args = {**args, "use_cpu": True}
    return transformers.TrainingArguments(output_dir=str(tmp_path / "out"), **args)


# ---- training arguments ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_training_args_construct_in_transformers(name: str, tmp_path: Path) -> None:
    spec, knobs, _ = example(name)
    for model_name in EXAMPLES[name][1]:
        plan = lower_training(spec, model(spec, model_name), knobs)
        built = construct(json.loads(plan.to_json()), tmp_path)
        assert built.per_device_train_batch_size == knobs[f"{model_name}.train.batch"]
        assert built.report_to in ("none", [])
        assert built.seed == built.data_seed == model(spec, model_name).training.seed  # type: ignore[union-attr]


def test_every_train_setting_is_mapped(tmp_path: Path) -> None:
    spec, knobs = compiled()
    plan = lower_training(spec, model(spec, "big"), knobs)
    args = plan.training_args
    assert args == {
        "bf16": True,
        "data_seed": 5,
        "fp16": False,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1e-4,
        "logging_steps": 10,
        "logging_strategy": "steps",
        "max_grad_norm": 1.0,
        "max_steps": 500,
        "num_train_epochs": 2.0,
        "optim": "adamw_torch",
        "per_device_train_batch_size": 4,
        "report_to": "none",
        "save_steps": 100,
        "save_strategy": "steps",
        "save_total_limit": 2,
        "seed": 5,
        "use_cpu": False,
        "warmup_steps": 0.1,
        "weight_decay": 0.01,
    }
    built = construct(args, tmp_path)
    assert built.max_steps == 500 and built.save_steps == 100 and built.bf16
    assert built.get_warmup_steps(500) == 50, "a float below 1 is a ratio of the total steps"
    assert plan.dp is None  # DP-SGD trains on one process: `private` carries the dp block
    private = lower_training(spec, model(spec, "private"), knobs)
    assert private.dp == {"epsilon": 4.0, "delta": 1e-6, "max_grad_norm": 0.5}
    assert plan.columns == {"input": None, "target": None, "prompt": "q", "completion": "a"}
    assert plan.data == {
        "dataset": "docs", "split": "train", "labels": None, "path": "run/data/docs/train.parquet"
    }  # fmt: skip
    assert (plan.hardware, plan.devices, plan.precision) == ("node4", 4, "bf16")


@pytest.mark.parametrize(
    ("written", "expected"),
    [("adamw", "adamw_torch"), ("adamw_8bit", "adamw_bnb_8bit"), ("sgd", "sgd"),
     ("adafactor", "adafactor")],
)  # fmt: skip
def test_optimizers_map_to_transformers_names(written: str, expected: str, tmp_path: Path) -> None:
    spec, knobs = compiled(optimizer=written)
    args = lower_training(spec, model(spec, "big"), knobs).training_args
    assert args["optim"] == expected
    assert construct(args, tmp_path).optim.value == expected


def test_defaults_and_precision_from_the_base_dtype(tmp_path: Path) -> None:
    spec, knobs = compiled()
    plan = lower_training(spec, model(spec, "cls"), knobs)
    args = plan.training_args
    assert plan.precision == "fp32" and not args["bf16"] and not args["fp16"]  # fp32 MiniLM
    assert args["num_train_epochs"] == 3.0 and args["learning_rate"] == 5e-5
    assert args["save_strategy"] == "epoch" and "max_steps" not in args
    assert args["use_cpu"] is True  # trained where its constraint runs: cpu_2core
    assert args["per_device_train_batch_size"] == knobs["cls.train.batch"]
    assert plan.max_seq == 256, "rows are `seq_len` long; serving's max_seq 64 does not cut them"
    assert plan.task == "classify" and plan.columns["target"] == "label"
    construct(args, tmp_path)


def test_labels_data_reads_the_labels_stage_output() -> None:
    spec, knobs, _ = example("youtube_spam")
    plan = lower_training(spec, model(spec, "spam_filter"), knobs)
    assert plan.data["labels"] == "spam" and plan.data["path"] == "run/labels/spam.parquet"
    assert plan.classes == ("ham", "spam") and plan.max_seq == 128


def test_to_json_is_sorted_and_deterministic() -> None:
    spec, knobs = compiled()
    first = lower_training(spec, model(spec, "big"), knobs).to_json()
    again = lower_training(*compiled()[:1], model(compiled()[0], "big"), knobs).to_json()
    assert first == again
    document = json.loads(first)
    assert list(document) == sorted(document) and first.endswith("}\n")
    assert isinstance(lower_training(spec, model(spec, "big"), knobs), TrainingPlan)


def _with_training(spec: Spec, name: str, **changes: Any) -> tuple[Spec, Model]:
    old = model(spec, name)
    training = old.training.model_copy(update=changes) if old.training else None
    new = old.model_copy(update={"training": training})
    return spec.model_copy(
        update={"models": tuple(new if m.name == name else m for m in spec.models)}
    ), new


def test_warmup_of_the_whole_run_is_refused() -> None:
    spec, knobs = compiled()
    spec, bad = _with_training(spec, "big", warmup=1.0)
    with pytest.raises(StageError) as caught:
        lower_training(spec, bad, knobs)
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "FM0806" and diagnostic.primary_span is not None


def test_a_model_without_training_data_is_refused() -> None:
    spec, knobs = compiled()
    spec, bad = _with_training(spec, "cls", data=None)
    with pytest.raises(StageError) as caught:
        lower_training(spec, bad, knobs)
    assert caught.value.diagnostics[0].code == "FM0805"


# ---- launch configs ------------------------------------------------------------------------


def test_accelerate_configs_load_in_accelerate(tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    spec, knobs = compiled()
    cases = [(spec, knobs, m) for m in ("big", "mid", "cls")]
    for name in EXAMPLES:
        example_spec, example_knobs, _ = example(name)
        cases += [(example_spec, example_knobs, m) for m in EXAMPLES[name][1]]
    for case_spec, case_knobs, name in cases:
        files = model_files(case_spec, model(case_spec, name), case_knobs)
        path = tmp_path / name / "accelerate.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[f"train/{name}/accelerate.yaml"], encoding="utf-8")
        loaded = ClusterConfig.from_yaml_file(str(path))
        assert loaded.compute_environment.value == "LOCAL_MACHINE"


def test_multi_gpu_topology_and_the_least_sharding_that_fits() -> None:
    spec, knobs = compiled(devices=8)
    big = model(spec, "big")
    plan = lower_training(spec, big, knobs)
    launch = lower_launch(spec, big, knobs, plan)
    # llama3_8b in full, bf16, batch 4 x 1024 on 80 GB devices: replicated, each device holds
    # 8.03e9 x (2 weights + 2 gradients + 2 DDP buckets + 4 AdamW) bytes = 80 GB before any
    # activation, so plain DDP cannot fit; ZeRO-1 shards the AdamW state 8 ways and fits.
    assert knobs["big.train.sharding"] == "zero1" and launch.sharding == "zero1"
    assert launch.zero_stage == 1 and not launch.offload
    assert launch.memory_estimate is not None and launch.memory_estimate < 80e9
    assert launch.accelerate["distributed_type"] == "DEEPSPEED"
    assert launch.accelerate["num_processes"] == 8 and launch.accelerate["num_machines"] == 2
    assert launch.accelerate["deepspeed_config"] == {
        "deepspeed_config_file": "train/big/deepspeed.json", "zero3_init_flag": False
    }  # fmt: skip
    assert launch.deepspeed["zero_optimization"]["stage"] == 1
    assert launch.torchrun["nnodes"] == 2 and launch.torchrun["nproc_per_node"] == 4
    assert launch.torchrun["rdzv_endpoint"] == "${MASTER_ADDR}:29500"


@pytest.mark.parametrize(
    ("setting", "distributed", "stage", "offloaded"),
    [
        ("sharding = fsdp", "FSDP", 3, False),
        ("sharding = zero3, offload = optimizer", "DEEPSPEED", 3, True),
        ("sharding = zero2, offload = parameters", "DEEPSPEED", 3, True),
    ],
)
def test_written_sharding_and_offload_are_what_launches(
    setting: str, distributed: str, stage: int, offloaded: bool, tmp_path: Path
) -> None:
    text = SPEC.replace("OPTIMIZER", "adamw").replace("DEVICES", "8")
    text = text.replace("sharding = auto,\n    checkpointing = auto", f"{setting},")
    result = check_text(text, file="t.fm", base=Path("."), verify=True)
    assert result.ok, result.diagnostics
    assert result.report is not None
    spec, knobs = compile_spec(result), dict(result.report.knobs)
    big = model(spec, "big")
    launch = lower_launch(spec, big, knobs, lower_training(spec, big, knobs))
    assert launch.accelerate["distributed_type"] == distributed
    assert launch.zero_stage == stage and launch.offload == offloaded
    zero = launch.deepspeed["zero_optimization"]
    assert ("offload_optimizer" in zero) == offloaded
    assert ("offload_param" in zero) == ("parameters" in setting)
    if distributed == "FSDP":
        assert launch.accelerate["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD"
    path = tmp_path / "accelerate.yaml"
    path.write_text(launch.files()["train/big/accelerate.yaml"], encoding="utf-8")
    from accelerate.commands.config.config_args import ClusterConfig

    loaded = ClusterConfig.from_yaml_file(str(path))  # accelerate reads it as written
    assert loaded.distributed_type.value == distributed


def test_memory_estimate_is_the_verifiers() -> None:
    for name in EXAMPLES:
        spec, knobs, report = example(name)
        estimates = {s["stage"]: s.get("estimates", {}) for s in report.stages}
        for model_name in EXAMPLES[name][1]:
            m = model(spec, model_name)
            launch = lower_launch(spec, m, knobs, lower_training(spec, m, knobs))
            shown = [v for k, v in estimates[f"train:{model_name}"].items() if "train.memory" in k]
            assert shown == [show(launch.memory_estimate or 0.0, "bytes")]
            assert launch.zero_stage == 0, "every example fits one device"
            assert launch.accelerate["distributed_type"] == "NO"


class _Probe:
    """transformers' DeepSpeed "auto" filling, run without deepspeed installed."""

    @staticmethod
    def fill(config: dict[str, Any], args: Any, model: Any) -> dict[str, Any]:
        from accelerate.utils.deepspeed import HfDeepSpeedConfig
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig as Hf

        class Probe(HfDeepSpeedConfig):  # type: ignore[misc]
            fill_match = Hf.fill_match
            fill_only = Hf.fill_only
            is_auto = Hf.is_auto
            trainer_config_process = Hf.trainer_config_process
            trainer_config_finalize = Hf.trainer_config_finalize

            def __init__(self, document: dict[str, Any]) -> None:
                super().__init__(document)
                self._dtype = None
                self.mismatches: list[str] = []

        probe = Probe(config)
        probe.trainer_config_process(args)
        probe.trainer_config_finalize(args, model, 100)
        return dict(probe.config)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_auto_values_are_all_filled_by_transformers(stage: int, tmp_path: Path) -> None:
    from fmlang.lower.launch import deepspeed_config

    spec, knobs = compiled()
    plan = lower_training(spec, model(spec, "big"), knobs)
    args = construct(plan.training_args, tmp_path)
    tiny = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1000,
        )
    )  # fmt: skip
    filled = _Probe.fill(deepspeed_config(stage, offload=stage == 3), args, tiny)
    assert "auto" not in json.dumps(filled)
    assert filled["train_micro_batch_size_per_gpu"] == 4
    assert filled["gradient_accumulation_steps"] == 8
    assert filled["bf16"] == {"enabled": True} and filled["gradient_clipping"] == 1.0


def test_devices_must_fill_whole_machines() -> None:
    spec, knobs = compiled(devices=6)
    big = model(spec, "big")
    with pytest.raises(StageError) as caught:
        lower_launch(spec, big, knobs, lower_training(spec, big, knobs))
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "FM0807" and "4 or 8" in (diagnostic.help or "")


def test_torchrun_command_parses_with_torchrun() -> None:
    from torch.distributed.run import get_args_parser

    spec, knobs = compiled(devices=8)
    big = model(spec, "big")
    launch = lower_launch(spec, big, knobs, lower_training(spec, big, knobs))
    argv = torchrun_command(launch.torchrun, env={"MASTER_ADDR": "10.0.0.1"})
    assert argv[0] == "torchrun"
    parsed = get_args_parser().parse_args(argv[1:])
    assert (parsed.nnodes, parsed.nproc_per_node) == ("2", "4")
    assert parsed.rdzv_endpoint == "10.0.0.1:29500" and parsed.rdzv_backend == "c10d"
    assert parsed.module and parsed.training_script == "fmlang.backends.train.worker"
    assert parsed.training_script_args == ["--job", "train/big/job.json"]
    assert '"${MASTER_ADDR}:29500"' in torchrun_shell(launch.torchrun)


def test_single_node_cpu_launch() -> None:
    spec, knobs, _ = example("youtube_spam")
    m = model(spec, "spam_filter")
    launch = lower_launch(spec, m, knobs, lower_training(spec, m, knobs))
    assert launch.accelerate["distributed_type"] == "NO" and launch.accelerate["use_cpu"]
    assert "gpu_ids" not in launch.accelerate
    assert torchrun_command(launch.torchrun)[1:5] == ["--nnodes", "1", "--nproc-per-node", "1"]
    assert launch.torchrun["rdzv_endpoint"] == "localhost:29500"


PROBE = """
import os, sys
import torch.distributed as dist
dist.init_process_group("gloo")
out = os.path.join(os.environ["PROBE_DIR"], f"rank{dist.get_rank()}.json")
with open(out, "w") as f:
    f.write(json.dumps([dist.get_world_size(), sys.argv[1:]]))
dist.destroy_process_group()
"""


def test_torchrun_command_starts_its_process_group_on_cpu(tmp_path: Path) -> None:
    """The emitted argv, run for real: two CPU processes join one gloo process group."""
    import os
    import socket
    import subprocess
    import sys

    spec, knobs = compiled()
    pair = model(spec, "pair")
    launch = lower_launch(spec, pair, knobs, lower_training(spec, pair, knobs))
    assert launch.accelerate["distributed_type"] == "MULTI_CPU"
    assert launch.accelerate["num_processes"] == 2 and launch.accelerate["use_cpu"]
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    argv = torchrun_command(launch.torchrun)
    argv[argv.index("--rdzv-endpoint") + 1] = f"localhost:{port}"
    argv[argv.index("-m") + 1] = "fm_probe"
    (tmp_path / "fm_probe.py").write_text("import json\n" + PROBE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROBE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        world, args = json.loads((tmp_path / f"rank{rank}.json").read_text(encoding="utf-8"))
        assert world == 2 and args == ["--job", "train/pair/job.json"]
