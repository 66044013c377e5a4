"""Peak memory of real training steps over a sweep of configurations (cost model calibration).

Each configuration builds a randomly initialised model (`LlamaForCausalLM` for generate,
`BertForSequenceClassification` for classify) in its weights dtype directly on the device,
wraps it with peft LoRA (`r`, `lora_alpha = 2r`, dropout 0; peft keeps the adapter weights in
fp32) or leaves every parameter trainable (full), and trains it for 3 optimizer steps with
transformers' `Trainer` as fmc's executor does (its `ExecutorTrainer` and `Collator` when
fmlang is importable, an identical local copy otherwise) on random token ids of exactly
`seq` tokens per row (labels = the ids for generate, a random class for classify). The peak
is reached by step 2, once the optimizer state exists. All configurations run in one
process; between them the model, Trainer and optimizer are deleted, `gc.collect()` runs and,
on CUDA, `torch.cuda.empty_cache()` and `reset_peak_memory_stats()`. A tiny warm-up run first
(not recorded) loads the lazily imported modules and creates the cuBLAS handles, so the first
row does not pay for them.

What is measured, on CUDA:

- allocated / reserved: `max_memory_allocated()` / `max_memory_reserved()` over the training
  steps (the peak statistics are reset once the model is on the device and wrapped, so the
  figures include the weights and everything still allocated then).
- after_load_allocated: `memory_allocated()` right after loading and wrapping.
- device_total, device_used_minus_reserved: from `mem_get_info()` at the end of training,
  (total - free) - `memory_reserved()`: the CUDA context and memory outside torch's allocator.
- rss_peak: the process's VmHWM (reset through /proc/self/clear_refs when the configuration
  starts).
- baseline_allocated: `memory_allocated()` before the model is built (cuBLAS workspaces,
  anything a previous row leaked); train_seconds: `trainer.train()`; seconds: the whole row.

On CPU, torch has no peak statistics: allocated = reserved = the peak of the running sum of
torch's own allocations, read from the profiler's memory events from before the model is
built to the end of the steps (weights, optimizer state, activations, loss buffers). The
resident set is kept beside it: rss_peak_delta = VmHWM after training minus the VmRSS before
the model was built (after `gc.collect()` and glibc `malloc_trim(0)`; VmHWM reset through
/proc/self/clear_refs), which adds the C allocator's retained heap and the Python objects.
after_load_allocated is VmRSS after wrapping minus the same baseline (baseline_rss);
device_total is the machine's RAM.

    python benchmarks/memory_sweep.py --device cuda --preset gpu --out results.json
    python benchmarks/memory_sweep.py --device cpu --preset cpu [--only tiny-b8]
    python benchmarks/memory_sweep.py --device cpu --preset gpu --scale 16   # dry run
    python benchmarks/memory_sweep.py --device cuda --preset gpu --list      # time estimates

The output is a JSON list with one row per configuration, rewritten atomically after each
one (a killed run keeps what finished); a configuration that raises (out of memory, say) is
recorded with ok=false, the error and the peak reached before it, and the sweep goes on.
`--deadline S` starts no configuration whose estimated time (`estimate_seconds`) would end
past S seconds after the sweep began. The "trainer" field says whether fmlang's own
Trainer subclass and collator were used or the local copies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from memory_sweep_configs import (
    STEPS,
    TINY_LLAMA,
    Config,
    Setup,
    cpu_preset,
    estimate_seconds,
    gpu_preset,
)

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5.25's renames

OPTIM = {
    "adamw": "adamw_torch",
    "adamw_fused": "adamw_torch_fused",
    "sgd": "sgd",
    "adafactor": "adafactor",
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


# ---------------------------------------------------------------- /proc and allocator


def proc_kib(key: str) -> int:
    """A `/proc/self/status` field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return proc_kib("VmHWM") <= proc_kib("VmRSS") + (1 << 20)


def release_memory(torch: Any, device: str) -> None:
    """Free what the previous row left: Python cycles, the CUDA cache, glibc's free heap."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------- probes


class CudaProbe:
    """torch.cuda's peak statistics around the training steps."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.out: dict[str, Any] = {}

    def start(self) -> None:
        reset_hwm()
        self.out["baseline_allocated"] = self.torch.cuda.memory_allocated()

    def loaded(self) -> None:
        self.torch.cuda.synchronize()
        self.out["after_load_allocated"] = self.torch.cuda.memory_allocated()
        self.torch.cuda.reset_peak_memory_stats()

    def trained(self) -> None:
        cuda = self.torch.cuda
        cuda.synchronize()
        free, total = cuda.mem_get_info()
        self.out.update(
            allocated=cuda.max_memory_allocated(),
            reserved=cuda.max_memory_reserved(),
            device_total=total,
            device_used_minus_reserved=(total - free) - cuda.memory_reserved(),
            rss_peak=proc_kib("VmHWM"),
        )

    def failed(self) -> None:
        """The peak reached before the error (an out-of-memory one, usually)."""
        self.out.update(
            allocated=self.torch.cuda.max_memory_allocated(),
            reserved=self.torch.cuda.max_memory_reserved(),
            rss_peak=proc_kib("VmHWM"),
        )


class CpuProbe:
    """torch's own CPU allocations, from the profiler's memory events: `allocated` is the peak
    of their running sum from before the model is built to the end of the steps (torch keeps
    no peak statistics on the CPU). The resident set (VmHWM over the steps minus VmRSS before
    the model) is kept beside it as `rss_peak_delta`: it adds the C allocator's retained heap
    and everything outside torch, so it runs above torch's figure."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.baseline = 0
        self.profiler: Any = None

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        reset_hwm()
        self.baseline = proc_kib("VmRSS")
        self.out["baseline_rss"] = self.baseline
        self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profiler.__enter__()

    def loaded(self) -> None:
        self.out["after_load_allocated"] = proc_kib("VmRSS") - self.baseline
        if not reset_hwm():
            raise RuntimeError("/proc/self/clear_refs does not reset VmHWM here")

    def _torch_peak(self) -> int:
        self.profiler.__exit__(None, None, None)
        events = sorted(self.profiler.profiler.kineto_results.events(), key=lambda e: e.start_ns())
        running = peak = 0
        for event in events:
            if event.name() == "[memory]":
                running += event.nbytes()
                peak = max(peak, running)
        return peak

    def trained(self) -> None:
        peak, hwm = self._torch_peak(), proc_kib("VmHWM")
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.out.update(
            allocated=peak,
            reserved=peak,
            device_total=total,
            device_used_minus_reserved=None,
            rss_peak=hwm,
            rss_peak_delta=hwm - self.baseline,
        )

    def failed(self) -> None:
        """The peak reached before the error."""
        self.out.update(allocated=self._torch_peak(), rss_peak=proc_kib("VmHWM"))


# ---------------------------------------------------------------- model


def model_config(config: Config) -> Any:
    """The transformers config of the row's shape, with its attention implementation."""
    from transformers import BertConfig, LlamaConfig

    s, st = config.shape, config.setup
    if s.family == "bert":
        return BertConfig(
            hidden_size=s.hidden,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            intermediate_size=s.intermediate,
            vocab_size=s.vocab,
            num_labels=st.classes,
            attn_implementation=st.attention,
        )
    return LlamaConfig(
        hidden_size=s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        head_dim=s.head_dim,
        intermediate_size=s.intermediate,
        vocab_size=s.vocab,
        tie_word_embeddings=s.tie,
        max_position_embeddings=max(8192, config.setup.seq),
        attn_implementation=st.attention,
    )


def build_model(torch: Any, config: Config, device: str) -> Any:
    """The randomly initialised model, created in its weights dtype on the device itself."""
    from transformers import BertForSequenceClassification, LlamaForCausalLM

    cls = LlamaForCausalLM if config.setup.task == "generate" else BertForSequenceClassification
    dtype = getattr(torch, DTYPES[config.setup.weights_dtype])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(model_config(config))
    finally:
        torch.set_default_dtype(previous)
    return model


def wrap(model: Any, setup: Setup) -> Any:
    """LoRA as the executor attaches it, or the bare model with every weight trainable."""
    from peft import LoraConfig, get_peft_model

    if setup.adapter == "full":
        model.requires_grad_(True)
        return model
    lora = LoraConfig(
        r=setup.rank,
        lora_alpha=2 * setup.rank,
        target_modules=list(setup.targets),
        lora_dropout=0.0,
        task_type="CAUSAL_LM" if setup.task == "generate" else "SEQ_CLS",
    )
    return get_peft_model(model, lora)


def model_json(config: Config, params: int, trainable: int) -> dict[str, Any]:
    s = config.shape
    return {
        "family": s.family,
        "hidden": s.hidden,
        "layers": s.layers,
        "heads": s.heads,
        "kv_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "intermediate": s.intermediate,
        "vocab": s.vocab,
        "tie": s.tie,
        "params": params,
        "trainable": trainable,
    }


# ---------------------------------------------------------------- data and Trainer


def dataset(config: Config) -> list[dict[str, Any]]:
    """batch x STEPS rows of exactly `seq` random token ids (no padding)."""
    import torch

    st = config.setup
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.shape.vocab, (st.batch * STEPS, st.seq), generator=gen)
    if st.task == "generate":
        return [{"input_ids": row, "labels": row} for row in ids.tolist()]
    labels = torch.randint(0, st.classes, (len(ids),), generator=gen).tolist()
    return [{"input_ids": row, "labels": c} for row, c in zip(ids.tolist(), labels, strict=True)]


def executor_parts() -> tuple[Any, Any, str]:
    """fmc's `ExecutorTrainer` factory and `Collator`, or the local copies below."""
    try:
        from fmlang.backends.train.data import Collator
        from fmlang.backends.train.trainer import _trainer_class
    except Exception:  # fmlang or one of its dependencies missing on this machine
        return _local_trainer_class, LocalCollator, "local copy"
    return _trainer_class, Collator, "fmlang executor"


class LocalCollator:
    """fmlang's Collator for rows of equal length: stacks ids, mask and labels."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = torch.tensor([row["input_ids"] for row in batch])
        labels = torch.tensor([row["labels"] for row in batch])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def executor_knobs(setup: Setup) -> list[Any]:
    """fmc's MemorySettings (and the selective-checkpointing callback) for the knobs only its
    executor implements; [] when the setup uses none of them."""
    special = setup.checkpointing in ("selective", "offload") or setup.chunked_loss
    if not (special or setup.optimizer_in_backward):
        return []
    from fmlang.backends.train.job import MemorySettings
    from fmlang.backends.train.knobs import selective_callback

    memory = MemorySettings(
        checkpointing=setup.checkpointing,  # type: ignore[arg-type]
        chunked_loss=setup.chunked_loss,
        optimizer=setup.optimizer,
        optimizer_in_backward=setup.optimizer_in_backward,
    )
    return [memory] + ([selective_callback()] if setup.checkpointing == "selective" else [])


def _local_trainer_class(task: str) -> Any:
    """fmlang's ExecutorTrainer: the classification loss is cross-entropy on fp32 logits."""
    import torch
    from transformers import Trainer

    class ExecutorTrainer(Trainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if task != "classify":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
            return (loss, outputs) if return_outputs else loss

    return ExecutorTrainer


def training_args(setup: Setup, device: str, output: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output,
        max_steps=STEPS,
        per_device_train_batch_size=setup.batch,
        learning_rate=1e-4,
        optim=OPTIM[setup.optimizer],
        bf16=setup.precision == "bf16",
        gradient_checkpointing=setup.checkpointing != "off",
        max_grad_norm=0.0 if setup.optimizer_in_backward else 1.0,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )


# ---------------------------------------------------------------- one row


def load(torch: Any, config: Config, device: str) -> tuple[Any, dict[str, Any], str]:
    """The wrapped model on the device, its model JSON, and its master weights."""
    model = build_model(torch, config, device)
    params = sum(p.numel() for p in model.parameters())
    model = wrap(model, config.setup)
    trainable = [p for p in model.parameters() if p.requires_grad]
    master = "fp32" if trainable[0].dtype == torch.float32 else "none"
    facts = model_json(config, params, sum(p.numel() for p in trainable))
    return model, facts, master


def train(model: Any, config: Config, device: str, probe: Any) -> str:
    """STEPS optimizer steps with the executor's Trainer; says whose Trainer it was."""
    from transformers import PrinterCallback

    factory, collator, source = executor_parts()
    knobs = executor_knobs(config.setup)
    with tempfile.TemporaryDirectory() as output:
        trainer = factory(config.setup.task, *knobs[:1])(
            model=model,
            args=training_args(config.setup, device, output),
            train_dataset=dataset(config),
            data_collator=collator(0),
            callbacks=knobs[1:],
        )
        trainer.remove_callback(PrinterCallback)  # the final metrics line
        started = time.perf_counter()
        trainer.train()
        probe.trained()
        probe.out["train_seconds"] = round(time.perf_counter() - started, 3)
    return source


def measure(torch: Any, config: Config, device: str, probe: Any) -> dict[str, Any]:
    """Build, wrap and train one configuration; the row's model/setup/trainer parts."""
    from transformers import set_seed

    set_seed(0)
    probe.start()
    model, facts, master = load(torch, config, device)
    probe.loaded()
    source = train(model, config, device, probe)
    setup = {**config.setup_json(), "master_weights": master}
    return {"model": facts, "setup": setup, "trainer": source}


def run_one(torch: Any, config: Config, device: str, versions: dict[str, Any]) -> dict[str, Any]:
    """The JSON row of one configuration; an exception becomes ok=false with its text and
    the peak reached before it."""
    started = time.perf_counter()
    probe: Any = CudaProbe(torch) if device == "cuda" else CpuProbe()
    try:
        parts, ok, error = measure(torch, config, device, probe), True, None
    except Exception as exc:  # OOM and anything else: record it, keep sweeping
        probe.failed()
        parts, ok, error = _failed_parts(config), False, f"{type(exc).__name__}: {exc}"[:2000]
    release_memory(torch, device)
    probe.out["seconds"] = round(time.perf_counter() - started, 3)
    head = {"name": config.name, "device": device, **versions}
    return {**head, **parts, "measured": probe.out, "ok": ok, "error": error}


def _failed_parts(config: Config) -> dict[str, Any]:
    model = model_json(config, config.shape.approx_params(), 0)
    return {"model": model, "setup": {**config.setup_json(), "master_weights": None}}


# ---------------------------------------------------------------- sweep


def versions(torch: Any, device: str) -> dict[str, Any]:
    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {"torch": torch.__version__, "transformers": transformers.__version__, "gpu": gpu}


def write_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace `path` with the rows as JSON (a temporary file in the same folder, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def warm_up(torch: Any, device: str) -> None:
    """One tiny LoRA run (not recorded): lazy imports, cuBLAS handles, Trainer machinery."""
    setup = Setup(rank=4, batch=2, seq=64, weights_dtype="fp32", precision="fp32")
    for s in (setup, Setup(adapter="full", batch=2, seq=64)):
        row = run_one(torch, Config("warm-up", TINY_LLAMA, s), device, {})
        if not row["ok"]:
            print(f"warm-up failed: {row['error']}", flush=True)


def sweep(configs: list[Config], device: str, out: Path, deadline: float | None) -> list[dict]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    start, rows = time.perf_counter(), []
    info = versions(torch, device)
    warm_up(torch, device)
    for config in configs:
        elapsed = time.perf_counter() - start
        if deadline is not None and elapsed + estimate_seconds(config, device) > deadline:
            print(f"skipped {config.name}: the --deadline would pass", flush=True)
            continue
        rows.append(run_one(torch, config, device, info))
        write_atomic(out, rows)
        print(table_line(rows[-1]), flush=True)
    print(f"total {time.perf_counter() - start:.1f} s", flush=True)
    return rows


# ---------------------------------------------------------------- report


HEADER = f"{'name':28} {'params':>8} {'load GiB':>9} {'alloc GiB':>10} {'resv GiB':>9} {'s':>6}"


def gib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**30:.3f}"


def table_line(row: dict[str, Any]) -> str:
    m = row["measured"]
    params = f"{row['model']['params'] / 1e6:.1f}M"
    if not row["ok"]:
        return f"{row['name']:28} {params:>8} FAILED {row['error'][:90]}"
    return (
        f"{row['name']:28} {params:>8} {gib(m['after_load_allocated']):>9} "
        f"{gib(m['allocated']):>10} {gib(m['reserved']):>9} {m['seconds']:>6.1f}"
    )


def list_configs(configs: list[Config], device: str) -> None:
    """Each configuration with its estimated wall time, and the total."""
    total = 0.0
    for c in configs:
        est = estimate_seconds(c, device)
        total += est
        st = c.setup
        print(
            f"{c.name:28} {c.shape.approx_params() / 1e6:8.0f}M b{st.batch} s{st.seq} "
            f"{st.adapter} {st.weights_dtype}/{st.precision} ~{est:.1f} s"
        )
    print(f"{len(configs)} configurations, ~{total:.0f} s on {device} (plus start-up)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cpu")
    p.add_argument("--preset", choices=("gpu", "cpu"), default="cpu")
    p.add_argument("--out", type=Path, default=Path("memory_sweep.json"))
    p.add_argument(
        "--only", default=None, help="run the configurations whose name has one of A,B,..."
    )
    p.add_argument("--scale", type=int, default=1, help="shrink the gpu preset's models by N")
    p.add_argument("--deadline", type=float, default=None, help="start no row past N s")
    p.add_argument("--list", action="store_true", help="print the configurations and stop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configs = gpu_preset(args.scale) if args.preset == "gpu" else cpu_preset()
    wanted = args.only.split(",") if args.only else None
    configs = [c for c in configs if wanted is None or any(w in c.name for w in wanted)]
    if args.list:
        list_configs(configs, args.device)
        return
    print(HEADER, flush=True)
    sweep(configs, args.device, args.out, args.deadline)


if __name__ == "__main__":
    main()
