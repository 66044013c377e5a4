"""Launch configs for a model's training: accelerate, DeepSpeed and torchrun.

Where training runs comes from `train { hardware, devices }` (else the first hardware the
model's constraints name, as in the verifier). A hardware profile is one machine holding
`devices` devices (1 when the profile does not say); `devices` in the train block counts
devices in all (1 when omitted) and must fill whole machines (FM0807).

The DeepSpeed ZeRO stage follows the verifier's training-memory estimate (`costmodel.
training_memory` at the knobs it chose: frozen weights W, trainable parameters with their
gradients and AdamW moments O = 16 bytes each, activations A) against one device's memory M,
across N devices in all. The lowest stage whose per-device bytes fit M is chosen:

- stage 0 (plain data parallelism): W + O + A
- stage 2 (gradients and optimizer moments sharded): W + O/4 + (3/4)O/N + A
- stage 3 (weights sharded too): (W + O)/N + A

and when none fits, stage 3 with optimizer state and weights offloaded to CPU memory. The
verifier counts capacity as M x N, so with one device "nothing fits" means only offloading
can help. Batch sizes, gradient accumulation, clipping and precision are left "auto": the
transformers DeepSpeed integration fills them from `training_args.json`, so the two never
disagree.

accelerate's `distributed_type` is NO for one process, MULTI_GPU for several GPUs, DEEPSPEED
when the ZeRO rule above picks a stage above 0 or offloading, and MULTI_CPU for several CPU
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
from fmlang.lower.adapters import DEFAULT_RANK, KnobValues, adapter_files, base_of, int_knob
from fmlang.lower.training import (
    TrainingPlan,
    lower_training,
    train_seq_len,
    training_hardware,
    training_of,
)
from fmlang.verify import costmodel as cm

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


@dataclass(frozen=True)
class MemoryParts:
    """The verifier's training-memory estimate split into what ZeRO can shard."""

    weights: float
    optimizer: float
    activations: float

    def per_device(self, stage: int, world: int) -> float:
        w, o, a = self.weights, self.optimizer, self.activations
        if stage == 0:
            return w + o + a
        if stage == 2:
            return w + o / 4 + 0.75 * o / world + a
        return (w + o) / world + a

    @property
    def total(self) -> float:
        return self.weights + self.optimizer + self.activations


@dataclass(frozen=True)
class LaunchConfigs:
    """`train/<model>/accelerate.yaml`, `deepspeed.json` and `torchrun.json`, plus why."""

    model: str
    accelerate: dict[str, Any]
    deepspeed: dict[str, Any]
    torchrun: dict[str, Any]
    zero_stage: int
    offload: bool
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
    parts = memory_parts(spec, model, knobs, plan)
    memory = hardware.memory.value if hardware and hardware.memory else None
    stage, offload = zero_stage(parts, memory, topology.world)
    return LaunchConfigs(
        model=model.name,
        accelerate=accelerate_config(model.name, plan, topology, stage, offload),
        deepspeed=deepspeed_config(stage, offload),
        torchrun=torchrun_spec(model.name, topology),
        zero_stage=stage,
        offload=offload,
        memory_estimate=parts.per_device(stage, topology.world),
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


def memory_parts(spec: Spec, model: Model, knobs: KnobValues, plan: TrainingPlan) -> MemoryParts:
    """The verifier's training-memory estimate at the chosen knobs, in parts."""
    training, _ = training_of(model)
    base = base_of(spec, model)
    arch = cm.Arch.of(base)
    adapter = model.adapter
    rank = int_knob(adapter.rank if adapter else None, f"{model.name}.rank", knobs, DEFAULT_RANK)
    trainable = cm.adapter_params(
        arch, adapter.kind if adapter else "full", rank, adapter.targets if adapter else ()
    )
    batch = int(plan.training_args["per_device_train_batch_size"])
    seq = train_seq_len(model, training, base, knobs)
    total = cm.training_memory(arch, trainable, batch, seq, plan.precision)
    weights = cm.weight_bytes(arch, "none")
    optimizer = trainable * 16.0
    return MemoryParts(weights, optimizer, total - weights - optimizer)


def zero_stage(parts: MemoryParts, memory: float | None, world: int) -> tuple[int, bool]:
    """(ZeRO stage, offload to CPU): the lowest stage whose per-device bytes fit."""
    if memory is None:
        return 0, False
    for stage in (0, 2, 3):
        if parts.per_device(stage, world) <= memory:
            return stage, False
    return 3, True


def mixed_precision(precision: str) -> str:
    return precision if precision in ("bf16", "fp16") else "no"


def accelerate_config(
    model: str, plan: TrainingPlan, topology: Topology, stage: int, offload: bool
) -> dict[str, Any]:
    """An `accelerate launch --config_file` document (accelerate's ClusterConfig keys)."""
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": _distributed_type(topology, stage, offload),
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
    return config


def _distributed_type(topology: Topology, stage: int, offload: bool) -> str:
    if topology.gpu and (stage > 0 or offload):
        return "DEEPSPEED"
    if topology.world == 1:
        return "NO"
    return "MULTI_GPU" if topology.gpu else "MULTI_CPU"


def _gpu_ids(topology: Topology) -> str:
    if topology.nproc_per_node == topology.per_machine:
        return "all"
    return ",".join(str(i) for i in range(topology.nproc_per_node))


def deepspeed_config(stage: int, offload: bool) -> dict[str, Any]:
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
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
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
    plan = lower_training(spec, model, knobs)
    files.update(plan.files())
    files.update(lower_launch(spec, model, knobs, plan).files())
    return files
