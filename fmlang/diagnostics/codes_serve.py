"""Diagnostic codes FM10xx: serving and deployment manifests.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

SERVE_CODES: dict[str, Code] = {
    # Codes below 1030 belong to the `fmc serve` runtime; 1030 to 1049 to deploy manifests.
    "FM1030": Code(
        "adapter kind vLLM cannot load",
        "vLLM loads only LoRA adapters on demand. A GPU target (served by vLLM) cannot "
        "load a DoRA, IA3, prefix or prompt adapter dynamically: write `adapters merged` in "
        "the deploy block, or train a `lora` adapter.",
    ),
    "FM1031": Code(
        "base weights a cluster cannot fetch",
        "A GPU target loads the base model from its `hub(...)` weights. `local(...)` and "
        "`pip(...)` weights exist only on the machine that built the spec: use a hub model, "
        "or serve `adapters merged` so that the merged weights ship with the build folder.",
    ),
    "FM1032": Code(
        "quantization vLLM cannot apply",
        "vLLM quantizes weights as it loads them to NF4 (bitsandbytes) or to one byte per "
        "weight (FP8); it has no in-flight fp4. Choose `quantize nf4` or `quantize int8`.",
    ),
    "FM1033": Code(
        "task vLLM does not serve",
        "GPU targets run vLLM, which serves generative models. A `classify` or `embed` "
        "model with a trained head runs on `fmc serve`: deploy it `local`ly or on a CPU "
        "hardware profile.",
    ),
    "FM1034": Code(
        "runtime cannot load adapters on demand",
        "KServe's huggingface backend has no LoRA support. Use `runtime = vllm` in the "
        "kserve block, or serve the deployment with `adapters merged`.",
    ),
    "FM1035": Code(
        "adapter rank above vLLM's limit",
        "vLLM's `--max-lora-rank` accepts 8, 16, 32, 64, 128, 256, 320 or 512. Lower the "
        "adapter rank or the target's `max_lora_rank` to at most 512.",
    ),
    "FM1036": Code(
        "auto setting without a chosen value",
        "A serving setting is `auto` but no solver chose its value, so no manifest can name "
        "it. Build with verification on (the default), or write a value instead of `auto`.",
    ),
    "FM1037": Code(
        "deployment serves nothing",
        "A deploy block must name a model or a merge of models of this spec, and each of "
        "them a base model with architecture facts. Fix the name after `deploy` or give the "
        "model a `base`.",
    ),
}
