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
    "FM1009": Code(
        "the engine process did not start",
        "`fmc serve` runs the model in its own process (so the model's Python and the HTTP "
        "work do not share one interpreter lock), and that process exited or did not "
        "report in time before it could load the model. Look for a lack of memory, or set "
        "`engine_process` to false in the server configuration to load in the server's "
        "process and see the failure there.",
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
    # FM1060 on: what the OpenAI-style API serves (fmlang/backends/serve/).
    "FM1060": Code(
        "adapter lacks the trained classification head",
        "The base checkpoint has no classification head, so the server gives it a randomly "
        "initialised one; only an adapter that carries its trained head (peft "
        "`modules_to_save`, which `task_type` SEQ_CLS saves) can classify. This adapter does "
        "not carry the named module, so its answers would come from random weights. Retrain "
        "it with the classification task (fmc does for `task classify`), or remove it from "
        "the deployment.",
    ),
    "FM1061": Code(
        "nothing can classify",
        "The deployment classifies, but its base checkpoint has no trained classification "
        "head and no adapter carries one, so every answer would come from random weights. "
        "Serve adapters trained for the classes (their `modules_to_save` hold the head), or "
        "a base checkpoint that has a trained head (an `...ForSequenceClassification`).",
    ),
    # FM1070 to FM1079: who may query a served endpoint (fmlang/backends/serve/auth.py).
    "FM1070": Code(
        "no API keys for an endpoint that grants query",
        "The deployment grants `query` to principals, so every request must carry an API key "
        "(`Authorization: Bearer KEY`) that maps to one of them, but the server was started "
        "without any keys. Give a key file with --api-keys FILE (or FMC_API_KEYS_FILE), or "
        "FMC_API_KEY_<NAME> variables; each entry is `PRINCIPAL KEY` or `PRINCIPAL "
        "sha256:HEX`. To try the server without keys on this machine only, start it with "
        "--no-auth on a loopback address.",
        io=True,
    ),
    "FM1071": Code(
        "cannot read the API key file",
        "The file --api-keys or FMC_API_KEYS_FILE names does not exist or cannot be read. "
        "Point it at the key file (one `PRINCIPAL KEY` per line).",
        io=True,
    ),
    "FM1072": Code(
        "invalid API key entry",
        "An API key entry is not `PRINCIPAL KEY` or `PRINCIPAL sha256:HEX` (64 hex digits), a "
        "plaintext key is shorter than 16 characters, two entries hold the same key, or a "
        "file holding plaintext keys can be read by other users. Fix the entry the message "
        "names; store keys as sha256 digests, or `chmod 600` the file.",
    ),
    "FM1073": Code(
        "--no-auth on an address others can reach",
        "--no-auth serves without checking API keys, so it is allowed only on a loopback "
        "address (127.0.0.1, ::1, localhost), where only this machine can connect, and never "
        "for a `visibility public` deployment. Bind loopback, or configure API keys instead.",
        io=True,
    ),
    "FM1074": Code(
        "internal endpoint bound to a public address",
        "A deployment with `visibility internal` (the default) may be reached only from "
        "loopback, private (RFC 1918, RFC 4193), link-local or shared (RFC 6598) networks, "
        "such as a cluster's pod network. The server was asked to listen on a public "
        "address, or on every interface of a machine that has one. Bind a private address "
        "with --host, or declare `visibility public` in the deploy block.",
        io=True,
    ),
    "FM1075": Code(
        "nobody may query the endpoint",
        "The serve configuration grants `query` to no principal, so every request would be "
        'refused (access fails closed). Add `grant query to "PRINCIPAL"` to the deploy block '
        "and rebuild, or list `query_principals` in a hand-written configuration.",
    ),
    "FM1076": Code(
        "cannot write the serving audit log",
        "Every access decision of `fmc serve` is appended to the audit log before the request "
        "is answered, and the server does not start (or answers 503) when it cannot append. "
        "The log is the build folder's audit.log, or the file --audit-log names (a writable "
        "volume when the build folder is mounted read-only). Make it writable, or repair the "
        "log (`fmc audit verify`).",
        io=True,
    ),
    "FM1077": Code(
        "request without an API key",
        "A request to the endpoint carried no `Authorization: Bearer KEY` header (or one "
        "that is not a bearer credential). It is answered 401 and recorded in the audit "
        "log. Send the API key issued to a principal the deployment grants `query`.",
    ),
    "FM1078": Code(
        "unknown API key",
        "A request's bearer key matches no key the server was given. It is answered 401 "
        "and recorded in the audit log (never the key itself). Use a key from the server's "
        "key file.",
    ),
    "FM1079": Code(
        "principal may not query the endpoint",
        "The request's API key belongs to a principal the deployment does not grant "
        "`query`. It is answered 403 and recorded in the audit log. Grant the principal "
        "`query` in the deploy block and rebuild, or use a granted principal's key.",
    ),
    # FM1080 to FM1084: which registered version is served (fmlang/backends/release.py).
    "FM1080": Code(
        "no version to serve",
        "`fmc serve` serves a registered version of each adapter: the one --version names, "
        "the `current` pointer `fmc rollback` set, or else the newest whose runtime gates "
        "all passed and that is not superseded. There is none: nothing is registered yet "
        "(run `fmc run`), or every version failed a gate or is superseded. Fix the gates "
        "and run again, name a version with --version, or pass --allow-failed-gates.",
    ),
    "FM1081": Code(
        "version failed its runtime gates",
        "The version named by --version or by the `current` pointer failed a runtime gate "
        "when `fmc run` checked it (the notes show measured against the bound), so it is not "
        "served. Serve a passing version (`fmc rollback NAME`), or pass "
        "--allow-failed-gates to serve it anyway.",
    ),
    "FM1082": Code(
        "superseded version",
        "The version was trained on rows a forget request removed and is marked superseded: "
        "it is never served. Run `fmc run` to train a version without them, or point the "
        "model at another version (`fmc rollback NAME --to REF` or `--clear`).",
    ),
    "FM1083": Code(
        "--version names another model's version",
        "`fmc serve --version REF` chooses the version of an adapter the deployment serves; "
        "REF is a version of a model or merge this deployment does not serve. Name one of "
        "its versions (`fmc log BUILD --name NAME`).",
    ),
    "FM1084": Code(
        "--version with nothing to choose from",
        "`fmc serve --version REF` chooses among the registered versions of the adapters a "
        "deployment serves; this one serves weights merged into its base model, or is a "
        "hand-written configuration that names adapter folders itself. Drop --version.",
    ),
}
