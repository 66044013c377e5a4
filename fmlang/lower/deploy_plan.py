"""A deploy target, decided (`Plan`): what it serves, on which hardware, with how many
replicas, how much memory and which images; and the serving container every manifest kind
shares (`fmc serve --config` or vLLM's OpenAI server). `fmlang.lower.manifests` turns plans
into KServe and Kubernetes objects, `fmlang.lower.compose` into compose files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fmlang import __version__
from fmlang.ir.nodes import DeployTarget, Hardware, Spec
from fmlang.lower.kserve import pinned
from fmlang.lower.server_config import (
    DEFAULT_PORT,
    MOUNT,
    VLLM_PORT,
    ServedModel,
    check_vllm,
    target_span,
    vllm_container_args,
    vllm_env,
)
from fmlang.lower.sizing import Memory, mebibytes, serve_memory, vllm_memory

VLLM_IMAGE = "vllm/vllm-openai:v0.9.2"
SERVE_IMAGE = f"ghcr.io/fmlang/fmc:{__version__}"
VLLM_START_SECONDS = 120  # vLLM loads weights and captures CUDA graphs before /health answers
# `fmc serve` listens once the model is loaded: /ready answered 4.5-9.7 s after start for
# the tiny test model on the 2-core CI machine, so the first probe waits 10 s. Larger models
# load for longer; a startup probe allows SERVE_LOAD_SECONDS (a chosen bound) before the
# liveness probe may restart the container.
SERVE_START_SECONDS = 10
# Where an `fmc serve` container finds its API key file (a Kubernetes Secret volume) and
# writes its audit log (a writable volume: the build folder is mounted read-only).
API_KEYS_MOUNT = "/etc/fmc/api-keys"
API_KEYS_FILE = "keys"
AUDIT_MOUNT = "/var/lib/fmc/audit"
SERVE_LOAD_SECONDS = 600
PROBE_PERIOD_SECONDS = 10


@dataclass(frozen=True)
class ManifestOptions:
    """Images and storage the manifests point at (see `fmlang.lower.manifests`). The claim
    defaults to `<deployment>-build` and `storage_uri` to `pvc://<claim>`."""

    vllm_image: str = VLLM_IMAGE
    serve_image: str = SERVE_IMAGE
    kserve_runtime: str = "kserve-huggingfaceserver"
    storage_uri: str | None = None
    artifacts_claim: str | None = None
    storage_class: str | None = None  # None: the cluster's default StorageClass

    def __post_init__(self) -> None:
        for image in (self.vllm_image, self.serve_image):
            pinned(image)  # raises ValueError for `latest` or a missing tag


@dataclass(frozen=True)
class Plan:
    """One target, decided: what it serves, on what, how many replicas, with which images."""

    served: ServedModel
    target: DeployTarget
    hardware: Hardware | None
    gpus: int
    memory: Memory | None  # per container (see fmlang.lower.sizing)
    bounds: tuple[int, int]  # (min, max) replicas
    visibility: str | None
    options: ManifestOptions
    pods: int = 1  # the most pods of this deployment that mount the claim at once

    @property
    def vllm(self) -> bool:
        """GPU targets run vLLM; everything else runs `fmc serve`."""
        return self.gpus > 0

    @property
    def name(self) -> str:
        return k8s_name(self.served.deploy)

    @property
    def claim(self) -> str:
        """The PersistentVolumeClaim that holds the build folder: as given, else the one a
        `pvc://` storage URI names, else `<deployment>-build`."""
        uri = self.options.storage_uri or ""
        named = uri.removeprefix("pvc://").split("/")[0] if uri.startswith("pvc://") else ""
        return self.options.artifacts_claim or named or f"{self.name}-build"

    @property
    def storage_uri(self) -> str:
        return self.options.storage_uri or f"pvc://{self.claim}"


def k8s_name(name: str) -> str:
    """A DNS-1123 label from a spec name (`support_assistant` → `support-assistant`)."""
    return name.lower().replace("_", "-").strip("-")[:63]


# ---- placement -----------------------------------------------------------------------


def plan_target(
    spec: Spec,
    served: ServedModel,
    target: DeployTarget,
    hardware_name: str | None,
    bounds: tuple[int, int],
    memory_bytes: float | None,
) -> Plan:
    """The target's hardware, GPUs and memory (FM1038 when an `fmc serve` container does
    not fit the hardware); vLLM's limits checked on GPU targets."""
    hardware = spec.hardware_profile(hardware_name) if hardware_name else None
    gpus = (hardware.devices or 1) if hardware and hardware.kind == "gpu" else 0
    model_bytes = memory_bytes if memory_bytes is not None else served.memory_bytes
    if gpus:
        check_vllm(served, target)
        memory = vllm_memory(model_bytes, hardware)
    else:
        memory = serve_memory(served, model_bytes, hardware, target_span(target, served))
    return Plan(served, target, hardware, gpus, memory, bounds, None, ManifestOptions())


def _mebibytes(count: float) -> str:
    return f"{mebibytes(count)}Mi"


def resources(plan: Plan) -> dict[str, dict[str, str]]:
    """Memory (and CPU cores) requested, memory limited (`fmc serve`); GPUs requested and
    limited."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if plan.memory is not None:
        requests["memory"] = _mebibytes(plan.memory.request)
        if plan.memory.limit is not None:
            limits["memory"] = _mebibytes(plan.memory.limit)
    if plan.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(plan.gpus)
    else:
        requests["cpu"] = str((plan.hardware.cores if plan.hardware else None) or 1)
    return {"requests": requests, "limits": limits} if limits else {"requests": requests}


def labels(plan: Plan) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "fmc",
        "app.kubernetes.io/name": plan.name,
        "fmc.dev/model": plan.served.target,
    }


def metadata(plan: Plan, **extra: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": plan.name, "labels": {**labels(plan), **extra}}
    if plan.target.namespace:
        meta["namespace"] = plan.target.namespace
    return meta


# ---- containers ----------------------------------------------------------------------


def config_path(served: ServedModel) -> str:
    return f"deploy/{served.deploy}/server.json"


def serve_command(served: ServedModel, port: int, api_keys: str) -> list[str]:
    """`fmc serve --config` on all interfaces inside a container: the build's server.json,
    whose paths are relative to the build folder, mounted at MOUNT (read-only); the API key
    file at `api_keys` (a Kubernetes Secret volume, a compose secret: never inline); the
    audit log on a writable volume at AUDIT_MOUNT."""
    return [
        "fmc", "serve", "--config", f"{MOUNT}/{config_path(served)}",
        "--host", "0.0.0.0", "--port", str(port),
        "--api-keys", api_keys, "--audit-log", f"{AUDIT_MOUNT}/audit.log",
    ]  # fmt: skip


def api_keys_secret(plan: Plan) -> str:
    """The Secret (Kubernetes) or compose secret that holds the deployment's API key file:
    created by its operator (`PRINCIPAL KEY` or `PRINCIPAL sha256:HEX` lines, under the
    key API_KEYS_FILE), never by fmc."""
    return f"{plan.name}-api-keys"


def serve_mounts() -> list[dict[str, Any]]:
    """An `fmc serve` container's own volumes: the API key Secret (read-only) and the
    audit log's folder."""
    return [
        {"name": "api-keys", "mountPath": API_KEYS_MOUNT, "readOnly": True},
        {"name": "audit", "mountPath": AUDIT_MOUNT},
    ]


def serve_volumes(plan: Plan) -> list[dict[str, Any]]:
    """The volumes `serve_mounts` names: the Secret, readable by the owner and group only
    (0440), and an emptyDir for the audit log (per pod: collect it, or mount a volume of
    your own at AUDIT_MOUNT to keep it beyond the pod)."""
    secret = {"secretName": api_keys_secret(plan), "defaultMode": 0o440}
    return [{"name": "api-keys", "secret": secret}, {"name": "audit", "emptyDir": {}}]


def _probe(path: str, port: int, delay: int, failures: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": delay,
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "failureThreshold": failures,
    }


def container(plan: Plan) -> dict[str, Any]:
    """The serving container: vLLM's OpenAI server on GPUs, `fmc serve` otherwise.
    vLLM answers /health once its engine is up; fmc serve answers /health and /ready."""
    served = plan.served
    body: dict[str, Any]
    if plan.vllm:
        port, ready, delay = VLLM_PORT, "/health", VLLM_START_SECONDS
        body = {"image": plan.options.vllm_image}
        body["args"] = vllm_container_args(served, plan.target, plan.gpus)
        body |= {"env": vllm_env(served)} if vllm_env(served) else {}
    else:
        port, ready, delay = DEFAULT_PORT, "/ready", SERVE_START_SECONDS
        keys = f"{API_KEYS_MOUNT}/{API_KEYS_FILE}"
        body = {"image": plan.options.serve_image, "command": serve_command(served, port, keys)}
        body["volumeMounts"] = serve_mounts()
        loading = SERVE_LOAD_SECONDS // PROBE_PERIOD_SECONDS
        body["startupProbe"] = _probe("/health", port, delay, failures=loading)
    return {
        "name": "server",
        **body,
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
        "resources": resources(plan),
        "livenessProbe": _probe("/health", port, delay),
        "readinessProbe": _probe(ready, port, delay),
    }
