"""Launch configs for a model's training: accelerate, DeepSpeed and torchrun.

Where training runs comes from `train { hardware, devices }` (else the first hardware the
model's constraints name, as in the verifier). A hardware profile is one machine holding
`devices` devices (1 when the profile does not say); `devices` in the train block counts
devices in all (1 when omitted) and must fill whole machines (FM0807).

The distributed strategy is the spec's `sharding` and `offload` knobs as the verifier chose
them (it picks the least sharding and offloading under which one device's share fits its
memory, `fmlang.verify.training`): `ddp` is plain data parallelism, `zero1`/`zero2`/`zero3`
a DeepSpeed config of that ZeRO stage, `fsdp` accelerate's FSDP (full shard); `offload =
optimizer` moves optimizer state to CPU memory, `parameters` weights too (ZeRO-3 or FSDP
CPU offload). Batch sizes, gradient accumulation, clipping and precision are left "auto":
the transformers DeepSpeed integration fills them from `training_args.json`, so the two
never disagree.

accelerate's `distributed_type` is NO for one process, MULTI_GPU for several GPUs, DEEPSPEED
for a ZeRO stage above 0 or offloading, FSDP for `fsdp`, and MULTI_CPU for several CPU
processes. `accelerate launch` starts MULTI_CPU processes only through an mpirun hostfile;
`torchrun.json` starts them anywhere (gloo), so it is the launcher to use on CPUs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from string import Template
from typing import Any

import yaml

from fmlang.atomic import json_text
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.ir.nodes import Hardware, Model, Spec
from fmlang.lower.adapters import KnobValues, adapter_files
from fmlang.lower.training import TrainingPlan, lower_training, training_of
from fmlang.verify.train_fit import training_hardware, training_memory_at

WORKER_MODULE = "fmlang.backends.train.worker"
RDZV_PORT = 29500
MULTI_NODE_HOST = "${MASTER_ADDR}"  # each node's launcher substitutes the first node's address
HF_AUTO = "auto"


@dataclass(frozen=True)
class Topology:
    """How many processes run where."""

    nnodes: int
    nproc_per_node: int
    gpu: bool
    per_machine: int

    @property
    def world(self) -> int:
        return self.nnodes * self.nproc_per_node


ZERO_STAGE = {"ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}


@dataclass(frozen=True)
class LaunchConfigs:
    """`train/<model>/accelerate.yaml`, `deepspeed.json` and `torchrun.json`, plus why."""

    model: str
    accelerate: dict[str, Any]
    deepspeed: dict[str, Any]
    torchrun: dict[str, Any]
    zero_stage: int
    offload: bool
    sharding: str
    memory_estimate: float | None  # bytes, the verifier's estimate for one device
    device_memory: float | None  # bytes of one device, None when no hardware is known

    def files(self) -> dict[str, str]:
        folder = f"train/{self.model}"
        return {
            f"{folder}/accelerate.yaml": yaml.safe_dump(self.accelerate, sort_keys=True),
            f"{folder}/deepspeed.json": _json(self.deepspeed),
            f"{folder}/torchrun.json": _json(self.torchrun),
        }


def _json(document: dict[str, Any]) -> str:
    return json_text(document)


def lower_launch(spec: Spec, model: Model, knobs: KnobValues, plan: TrainingPlan) -> LaunchConfigs:
    """The launch configs for `model`, whose training plan is `plan`."""
    hardware = training_hardware(spec, model)
    topology = topology_of(model, hardware)
    found = training_memory_at(spec, model, knobs)
    sharding = found[0].sharding if found else "ddp"
    offload = found[0].offload if found else "none"
    stage = 3 if offload == "parameters" else ZERO_STAGE[sharding]
    memory = hardware.memory.value if hardware and hardware.memory else None
    return LaunchConfigs(
        model=model.name,
        accelerate=accelerate_config(model.name, plan, topology, sharding, stage, offload),
        deepspeed=deepspeed_config(stage, offload),
        torchrun=torchrun_spec(model.name, topology),
        zero_stage=stage,
        offload=offload != "none",
        sharding=sharding,
        memory_estimate=found[1].peak if found else None,
        device_memory=memory,
    )


def topology_of(model: Model, hardware: Hardware | None) -> Topology:
    """Machines and processes per machine for the train block's `devices` on `hardware`."""
    training, _ = training_of(model)
    gpu = hardware is not None and hardware.kind != "cpu"
    per_machine = (hardware.devices if hardware else None) or 1
    world = training.devices or 1
    if world <= per_machine:
        return Topology(1, world, gpu, per_machine)
    if world % per_machine == 0:
        return Topology(world // per_machine, per_machine, gpu, per_machine)
    name = hardware.name if hardware else "?"
    where = training.span or model.span
    raise StageError(
        error(
            "FM0807",
            f"`devices = {world}` does not fill whole `{name}` machines "
            f"({per_machine} devices each)",
            where.to_span() if where else None,
            "training devices",
            help=f"use a multiple of {per_machine}, such as {per_machine * (world // per_machine)}"
            f" or {per_machine * (world // per_machine + 1)}",
        )
    )


def mixed_precision(precision: str) -> str:
    return precision if precision in ("bf16", "fp16") else "no"


def accelerate_config(
    model: str, plan: TrainingPlan, topology: Topology, sharding: str, stage: int, offload: str
) -> dict[str, Any]:
    """An `accelerate launch --config_file` document (accelerate's ClusterConfig keys)."""
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": _distributed_type(topology, sharding, stage, offload),
        "downcast_bf16": "no",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": mixed_precision(plan.precision),
        "num_machines": topology.nnodes,
        "num_processes": topology.world,
        "rdzv_backend": "static" if topology.nnodes == 1 else "c10d",
        "same_network": True,
        "use_cpu": not topology.gpu,
    }
    if topology.gpu:
        config["gpu_ids"] = _gpu_ids(topology)
    if topology.nnodes > 1:
        config["main_process_port"] = RDZV_PORT
    if config["distributed_type"] == "DEEPSPEED":
        config["deepspeed_config"] = {
            "deepspeed_config_file": f"train/{model}/deepspeed.json",
            "zero3_init_flag": stage == 3,
        }
    if config["distributed_type"] == "FSDP":
        config["fsdp_config"] = fsdp_config(offload)
    return config


def fsdp_config(offload: str) -> dict[str, Any]:
    """accelerate's FSDP plugin keys: full sharding per transformer block, weights loaded
    on rank 0 only (`cpu_ram_efficient_loading`), CPU offload for `offload = parameters`."""
    return {
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": offload == "parameters",
        "fsdp_sharding_strategy": "FULL_SHARD",
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_sync_module_states": True,
        "fsdp_use_orig_params": True,
        "fsdp_version": 1,
    }


def _distributed_type(topology: Topology, sharding: str, stage: int, offload: str) -> str:
    if topology.gpu and sharding == "fsdp":
        return "FSDP"
    if topology.gpu and (stage > 0 or offload != "none"):
        return "DEEPSPEED"
    if topology.world == 1:
        return "NO"
    return "MULTI_GPU" if topology.gpu else "MULTI_CPU"


def _gpu_ids(topology: Topology) -> str:
    if topology.nproc_per_node == topology.per_machine:
        return "all"
    return ",".join(str(i) for i in range(topology.nproc_per_node))


def deepspeed_config(stage: int, offload: str) -> dict[str, Any]:
    """A DeepSpeed config for the transformers integration ("auto" where it fills values)."""
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": HF_AUTO,
    }
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size=HF_AUTO,
            stage3_param_persistence_threshold=HF_AUTO,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if offload != "none":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "parameters":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "bf16": {"enabled": HF_AUTO},
        "fp16": {"enabled": HF_AUTO},
        "gradient_accumulation_steps": HF_AUTO,
        "gradient_clipping": HF_AUTO,
        "train_batch_size": HF_AUTO,
        "train_micro_batch_size_per_gpu": HF_AUTO,
        "wall_clock_breakdown": False,
        "zero_optimization": zero,
    }


def torchrun_spec(model: str, topology: Topology) -> dict[str, Any]:
    """torchrun's arguments: one rendezvous (c10d) for every node, the worker module."""
    host = "localhost" if topology.nnodes == 1 else MULTI_NODE_HOST
    return {
        "nnodes": topology.nnodes,
        "nproc_per_node": topology.nproc_per_node,
        "rdzv_backend": "c10d",
        "rdzv_endpoint": f"{host}:{RDZV_PORT}",
        "rdzv_id": model,
        "module": WORKER_MODULE,
        "args": ["--job", f"train/{model}/job.json"],
    }


def torchrun_command(
    spec: dict[str, Any], env: dict[str, str] | None = None, program: str = "torchrun"
) -> list[str]:
    """The argv of a torchrun spec. `${VAR}` in the endpoint is replaced from `env` when it
    is given (a multi-node endpoint names the first node's address)."""
    endpoint = str(spec["rdzv_endpoint"])
    if env is not None:
        endpoint = Template(endpoint).safe_substitute(env)
    return [
        program,
        "--nnodes", str(spec["nnodes"]),
        "--nproc-per-node", str(spec["nproc_per_node"]),
        "--rdzv-backend", str(spec["rdzv_backend"]),
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", str(spec["rdzv_id"]),
        "-m", str(spec["module"]),
        *[str(arg) for arg in spec["args"]],
    ]  # fmt: skip


def torchrun_shell(spec: dict[str, Any]) -> str:
    """The command as one shell line; `${VAR}` stays inside double quotes for the shell."""
    return " ".join(_shell_word(arg) for arg in torchrun_command(spec))


def _shell_word(arg: str) -> str:
    if "$" not in arg:
        return shlex.quote(arg)
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


def model_files(spec: Spec, model: Model, knobs: KnobValues) -> dict[str, str]:
    """Every file the build writes for one model: its adapter config (when it has a PEFT
    adapter) and, when it has a train block, its training arguments and launch configs."""
    files = adapter_files(spec, model, knobs)
    if model.training is None:
        return files
    from fmlang.lower.train_job import job_path, lower_job

    plan = lower_training(spec, model, knobs)
    files.update(plan.files())
    files.update(lower_launch(spec, model, knobs, plan).files())
    files[job_path(model.name)] = json_text(lower_job(spec, model, knobs))
    return files
