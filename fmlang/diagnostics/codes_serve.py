"""Diagnostic codes FM10xx: serving and deployment manifests.
Append-only, in ascending order."""

from __future__ import annotations

from fmlang.diagnostics.code import Code

SERVE_CODES: dict[str, Code] = {
    # Codes below 1030 belong to the `fmc serve` runtime; 1030 to 1049 to deploy manifests.
    "FM1001": Code(
        "cannot read the serve configuration",
        "The serve configuration file does not exist or cannot be read. Pass the "
        "`deploy/<name>/server.json` that `fmc build` writes.",
        io=True,
    ),
    "FM1002": Code(
        "invalid serve configuration",
        "A field of the serve configuration is missing, unknown or out of range. The "
        "message names each field; `fmc build` writes a valid configuration.",
    ),
    "FM1003": Code(
        "cannot read an adapter folder",
        "An adapter folder lacks adapter_config.json or its weights "
        "(adapter_model.safetensors or adapter_model.bin), or they are damaged. Point "
        "the adapter at a folder written by peft's save_pretrained.",
        io=True,
    ),
    "FM1004": Code(
        "adapter the batched server cannot serve",
        "Batched multi-adapter serving applies plain LoRA on linear layers (and whole "
        "replacement heads). DoRA, LoRA biases, fan_in_fan_out layers, embedding LoRA and "
        "other adapter kinds cannot share a batch: merge such an adapter into the base model.",
    ),
    "FM1005": Code(
        "adapter does not fit the base model",
        "The adapter targets a layer the base model lacks, or a layer of another shape: it "
        "was trained on a different base model. Serve it with the base it was trained on.",
    ),
    "FM1006": Code(
        "cannot load the base model",
        "The base model folder (config.json and weights) is missing or damaged, or the hub "
        "id cannot be fetched. Give a local model folder or a reachable hub id and revision.",
        io=True,
    ),
    "FM1007": Code(
        "no tokenizer beside the base model",
        "Serving text needs the base model's tokenizer. Save it into the model folder with "
        "tokenizer.save_pretrained, next to config.json.",
        io=True,
    ),
    "FM1008": Code(
        "classes do not match the classification head",
        "A classify server names as many classes as the model's head has outputs, in "
        "training order. Fix the class list or serve the model trained for these classes.",
    ),
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
    "FM1038": Code(
        "server does not fit the hardware",
        "An `fmc serve` container requests the model's serving footprint (the cost model's "
        "weights, resident adapters, KV cache and activations) plus the memory of the server "
        "process itself, measured with a negligible model. That request exceeds the target "
        "hardware profile's memory, so no node of that kind could schedule the pod. Choose "
        "hardware with more memory, lower the serving batch, context or resident adapters, "
        "or quantize the weights.",
    ),
    "FM1050": Code(
        "task cannot be served",
        "`fmc serve` serves causal language models (`task generate`, OpenAI-style "
        "completions) and classifiers (`task classify`, /v1/classify). Embedding models are "
        "not served yet.",
    ),
    "FM1051": Code(
        "no local server for the deployment",
        "`fmc serve` runs a deployment's `local { }` target from the build folder's "
        "deploy/<name>/server.json. Add a `local` target to the deploy block, or name a "
        "deployment that has one with --deploy.",
        io=True,
    ),
}
