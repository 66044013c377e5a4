"""`compose.yaml`: one deploy target as a compose service on one host, the build folder
bind-mounted read-only at MOUNT (the file sits at DIR/deploy/<name>/, so `../..` is DIR).
`fmc serve` gets its entrypoint and command spelled out, a memory reservation and limit,
its API key file as a compose secret (the file FMC_API_KEYS_FILE names on the host when
compose starts; never inline) and a named volume for its audit log; vLLM gets reserved
GPUs and the host's IPC namespace. The port is published on loopback unless the local
target names a host address or the deployment is `visibility public`.
"""

from __future__ import annotations

from typing import Any

from fmlang.lower.deploy_plan import (
    AUDIT_MOUNT,
    SERVE_LOAD_SECONDS,
    VLLM_START_SECONDS,
    Plan,
    api_keys_secret,
    serve_command,
)
from fmlang.lower.server_config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MOUNT,
    VLLM_PORT,
    vllm_container_args,
    vllm_env,
)
from fmlang.lower.sizing import Memory, mebibytes

SECRETS = "/run/secrets"  # where compose mounts a service's secrets
# The host's API key file, from the environment of whoever runs `docker compose up`.
KEYS_FILE = "${FMC_API_KEYS_FILE:?set FMC_API_KEYS_FILE to the API key file}"


def _healthcheck(port: int, path: str, start: int) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}')"
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": "10s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{start}s",
    }


def _published(host: str | None, port: int, inner: int, public: bool) -> str:
    """`[IP:]HOST:CONTAINER`: on the local target's address; with none, on loopback unless
    the deployment is public; a host name (not an address) publishes on every interface."""
    host = host or (None if public else DEFAULT_HOST)
    parts = (host or "").split(".")
    is_ip = len(parts) == 4 and all(p.isdigit() for p in parts)
    return f"{host}:{port}:{inner}" if is_ip else f"{port}:{inner}"


def _gpu_reservation(gpus: int) -> dict[str, Any]:
    device = {"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}
    return {"resources": {"reservations": {"devices": [device]}}}


def _compose_memory(memory: Memory) -> dict[str, Any]:
    """Compose's memory reservation and limit (binary units: `M` is MiB)."""
    resources = {"reservations": {"memory": f"{mebibytes(memory.request)}M"}}
    if memory.limit is not None:
        resources["limits"] = {"memory": f"{mebibytes(memory.limit)}M"}
    return {"resources": resources}


def compose_document(plan: Plan, host: str | None, port: int | None) -> dict[str, Any]:
    """One service on one host; the build folder (two levels above the file, bind-mounted)
    read-only at MOUNT."""
    served = plan.served
    service: dict[str, Any] = {"volumes": [f"../..:{MOUNT}:ro"], "restart": "unless-stopped"}
    extra: dict[str, Any] = {}
    if plan.vllm:
        inner = VLLM_PORT
        service |= {
            "image": plan.options.vllm_image,
            "command": vllm_container_args(served, plan.target, plan.gpus),
            "environment": {env["name"]: env["value"] for env in vllm_env(served)},
            "healthcheck": _healthcheck(inner, "/health", VLLM_START_SECONDS),
            "ipc": "host",  # vLLM's workers share tensors through shared memory
            "deploy": _gpu_reservation(plan.gpus),
        }
    else:
        inner = port or DEFAULT_PORT
        secret = api_keys_secret(plan)
        command = serve_command(served, inner, f"{SECRETS}/{secret}")
        service |= {
            "image": plan.options.serve_image,
            "entrypoint": command[:1],  # whatever the image's own entrypoint is
            "command": command[1:],
            "healthcheck": _healthcheck(inner, "/ready", SERVE_LOAD_SECONDS),
            "secrets": [secret],
        }
        service["volumes"].append(f"audit:{AUDIT_MOUNT}")
        service |= {"deploy": _compose_memory(plan.memory)} if plan.memory else {}
        extra = {
            "secrets": {secret: {"file": KEYS_FILE}},
            "volumes": {"audit": {}},
        }
    service["ports"] = [_published(host, port or inner, inner, plan.visibility == "public")]
    return {"name": plan.name, "services": {plan.name: service}, **extra}
