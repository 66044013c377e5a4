"""Deployment manifests: a `deploy` block → `deploy/<deploy>/…` in the build folder.

Which files each target writes:
- `kserve`     → `inferenceservice.yaml`: a KServe v1beta1 InferenceService. On a GPU profile it
  uses the `huggingface` model format (KServe's huggingfaceserver runtime with its vLLM
  backend) and vLLM's LoRA options; on a CPU profile a custom predictor container running
  `fmc serve`.
- `kubernetes` → `kubernetes.yaml`: a Deployment (vLLM's OpenAI server on a GPU profile,
  `fmc serve` otherwise), a Service, and a HorizontalPodAutoscaler when `replicas` is a range.
- `local`      → `server.json` (the `fmc serve` configuration) and `compose.yaml`, the same
  server in a container on one host.
- `compose`    → `compose.yaml` on the hardware the deployment names elsewhere (the first target
  with a `hardware` setting): vLLM with reserved GPUs on a GPU profile, `fmc serve` otherwise.
Every target that runs `fmc serve` also gets `server.json`.

Conventions (all overridable through `ManifestOptions`):
- The build folder is published where the cluster can read it (`storage_uri`, by default the
  PersistentVolumeClaim `fmc-build`; an `s3://` or `gs://` prefix works the same for KServe)
  and mounted at `/mnt/models`, KServe's model mount. Adapters are passed to vLLM as
  `name=/mnt/models/<path in the build folder>`; merged weights are the predictor's
  `storageUri` (`<storage_uri>/<path>`), mounted at `/mnt/models`.
- A base model loaded dynamically comes from its `hub(...)` weights (and revision).
- Images are pinned: `vllm/vllm-openai:v0.9.2` for GPUs, `ghcr.io/fmlang/fmc:<version>` for
  `fmc serve`. Never `latest`.
- Replicas: the solver's choice (`<target>.<kind>.replicas`) as a fixed count, a written range
  `lo..hi` as autoscaling bounds, and an `auto` range no constraint depended on as its bounds.
- Memory requests: the verifier's serving-memory estimate when a memory constraint gave one,
  else the same cost-model formula evaluated at the chosen knobs, else (a base model without
  a parameter count) the hardware profile's memory. On GPUs this is host memory, which the
  weights pass through as they load; GPUs are `nvidia.com/gpu` requests and limits.
- GPU autoscaling (HPA) follows the per-pod metric `vllm:num_requests_running` (vLLM's
  Prometheus metric, served through a metrics adapter such as prometheus-adapter) with the
  serving batch as target; CPU autoscaling follows CPU utilization. KServe scales on
  concurrency with the serving batch as target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from fmlang import __version__
from fmlang.atomic import json_text, write_text_atomic
from fmlang.ir.nodes import Deployment, DeployTarget, Hardware, Spec
from fmlang.lower.kserve import pinned, validate_compose, validate_inferenceservice
from fmlang.lower.server_config import (
    DEFAULT_PORT,
    MOUNT,
    VLLM_PORT,
    ServedModel,
    check_vllm,
    engine_args,
    fail,
    model_reference,
    replicas,
    resolve_served,
    server_config,
    serving_memory,
    target_span,
    vllm_container_args,
    vllm_env,
)

__all__ = [
    "ManifestOptions", "Plan", "lower_deployment", "lower_deployments", "serving_memory",
    "write_files",
]  # fmt: skip

VLLM_IMAGE = "vllm/vllm-openai:v0.9.2"
SERVE_IMAGE = f"ghcr.io/fmlang/fmc:{__version__}"
CPU_SCALE_UTILIZATION = 80  # percent of the CPU request before the HPA adds a replica
VLLM_START_SECONDS = 120  # vLLM loads weights and captures CUDA graphs before /health answers
SERVE_START_SECONDS = 10


@dataclass(frozen=True)
class ManifestOptions:
    """Images and storage the manifests point at (see the module docstring)."""

    vllm_image: str = VLLM_IMAGE
    serve_image: str = SERVE_IMAGE
    kserve_runtime: str = "kserve-huggingfaceserver"
    storage_uri: str = "pvc://fmc-build"
    artifacts_claim: str = "fmc-build"

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
    memory_bytes: float | None
    bounds: tuple[int, int]  # (min, max) replicas
    visibility: str | None
    options: ManifestOptions

    @property
    def vllm(self) -> bool:
        """GPU targets run vLLM; everything else runs `fmc serve`."""
        return self.gpus > 0

    @property
    def name(self) -> str:
        return k8s_name(self.served.deploy)


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
    """The target's hardware, GPUs and memory; vLLM's limits checked on GPU targets."""
    hardware = spec.hardware_profile(hardware_name) if hardware_name else None
    gpus = (hardware.devices or 1) if hardware and hardware.kind == "gpu" else 0
    memory_bytes = memory_bytes if memory_bytes is not None else served.memory_bytes
    if memory_bytes is None and hardware is not None and hardware.memory is not None:
        memory_bytes = hardware.memory.value * (hardware.devices or 1)
    if gpus:
        check_vllm(served, target)
    return Plan(served, target, hardware, gpus, memory_bytes, bounds, None, ManifestOptions())


def _mebibytes(count: float) -> str:
    return f"{math.ceil(count / 2**20)}Mi"


def resources(plan: Plan) -> dict[str, dict[str, str]]:
    """Memory (and CPU cores) requested; GPUs requested and limited."""
    requests: dict[str, str] = {}
    if plan.memory_bytes is not None:
        requests["memory"] = _mebibytes(plan.memory_bytes)
    if not plan.gpus:
        requests["cpu"] = str((plan.hardware.cores if plan.hardware else None) or 1)
        return {"requests": requests}
    requests["nvidia.com/gpu"] = str(plan.gpus)
    return {"requests": requests, "limits": {"nvidia.com/gpu": str(plan.gpus)}}


def _labels(plan: Plan) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "fmc",
        "app.kubernetes.io/name": plan.name,
        "fmc.dev/model": plan.served.target,
    }


def _metadata(plan: Plan, **extra: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": plan.name, "labels": {**_labels(plan), **extra}}
    if plan.target.namespace:
        meta["namespace"] = plan.target.namespace
    return meta


# ---- containers ----------------------------------------------------------------------


def config_path(served: ServedModel) -> str:
    return f"deploy/{served.deploy}/server.json"


def serve_command(served: ServedModel, port: int) -> list[str]:
    """`fmc serve` on all interfaces inside a container; paths in server.json are relative
    to the build folder, mounted at MOUNT."""
    return [
        "fmc", "serve", "--config", f"{MOUNT}/{config_path(served)}",
        "--host", "0.0.0.0", "--port", str(port),
    ]  # fmt: skip


def _probe(path: str, port: int, delay: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": delay,
        "periodSeconds": 10,
        "failureThreshold": 3,
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
        body = {"image": plan.options.serve_image, "command": serve_command(served, port)}
    return {
        "name": "server",
        **body,
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
        "resources": resources(plan),
        "livenessProbe": _probe("/health", port, delay),
        "readinessProbe": _probe(ready, port, delay),
    }


# ---- KServe --------------------------------------------------------------------------


def _kserve_scaling(plan: Plan) -> dict[str, Any]:
    low, high = plan.bounds
    scaling: dict[str, Any] = {"minReplicas": low, "maxReplicas": high}
    if high > low:
        scaling |= {"scaleMetric": "concurrency", "scaleTarget": plan.served.batch}
    return scaling


def _kserve_model(plan: Plan) -> dict[str, Any]:
    """The huggingface model format on KServe's runtime, with vLLM's options."""
    served, target, options = plan.served, plan.target, plan.options
    backend = target.runtime or "vllm"
    if backend == "huggingface" and served.adapters and not served.merged:
        raise fail(
            "FM1034",
            "KServe's huggingface backend cannot load adapters on demand",
            target_span(target, served), "runtime without LoRA support",
            "use `runtime = vllm`, or serve the deployment with `adapters merged`",
        )  # fmt: skip
    args = [f"--model_name={served.deploy}", f"--backend={backend}"]
    storage = options.storage_uri
    if served.merged:  # the merged weights are the model KServe mounts at MOUNT
        storage = f"{options.storage_uri}/{served.merged_path}"
    else:
        model, revision = model_reference(served)
        args.append(f"--model_id={model}")
        args += [f"--model_revision={revision}"] if revision else []
    return {
        "modelFormat": {"name": "huggingface"},
        "runtime": options.kserve_runtime,
        "storageUri": storage,
        "args": args + engine_args(served, target, plan.gpus),
        "env": vllm_env(served),
        "resources": resources(plan),
    }


def inference_service(plan: Plan) -> dict[str, Any]:
    """A KServe InferenceService: vLLM through the huggingface runtime on GPUs, a custom
    `fmc serve` predictor (build folder from `storage_uri`) otherwise."""
    public = plan.visibility == "public"
    extra = {} if public else {"networking.kserve.io/visibility": "cluster-local"}
    predictor = _kserve_scaling(plan)
    if plan.vllm:
        predictor["model"] = _kserve_model(plan)
    else:
        storage = {"name": "STORAGE_URI", "value": plan.options.storage_uri}  # → MOUNT
        serving = container(plan)
        serving |= {"name": "kserve-container", "env": [storage]}
        predictor["containers"] = [serving]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(plan, **extra),
        "spec": {"predictor": predictor},
    }


# ---- Kubernetes ----------------------------------------------------------------------


def _pod(plan: Plan) -> dict[str, Any]:
    """The serving container with the build folder (a read-only claim) at MOUNT."""
    serving = container(plan)
    claim = {"claimName": plan.options.artifacts_claim, "readOnly": True}
    mounts = [{"name": "artifacts", "mountPath": MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "artifacts", "persistentVolumeClaim": claim}]
    if plan.vllm:  # vLLM's workers share tensors through /dev/shm
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    return {"containers": [{**serving, "volumeMounts": mounts}], "volumes": volumes}


def _deployment(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(plan),
        "spec": {
            "replicas": plan.bounds[0],
            "selector": {"matchLabels": {"app.kubernetes.io/name": plan.name}},
            "template": {"metadata": {"labels": _labels(plan)}, "spec": _pod(plan)},
        },
    }


def _service(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan),
        "spec": {
            "type": "LoadBalancer" if plan.visibility == "public" else "ClusterIP",
            "selector": {"app.kubernetes.io/name": plan.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _hpa_metric(plan: Plan) -> dict[str, Any]:
    if plan.vllm:
        running = {"type": "AverageValue", "averageValue": str(plan.served.batch)}
        metric = {"metric": {"name": "vllm:num_requests_running"}, "target": running}
        return {"type": "Pods", "pods": metric}
    busy: dict[str, Any] = {"type": "Utilization", "averageUtilization": CPU_SCALE_UTILIZATION}
    return {"type": "Resource", "resource": {"name": "cpu", "target": busy}}


def _autoscaler(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(plan),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
            "minReplicas": plan.bounds[0],
            "maxReplicas": plan.bounds[1],
            "metrics": [_hpa_metric(plan)],
        },
    }


def kubernetes_documents(plan: Plan) -> list[dict[str, Any]]:
    """Deployment and Service, plus an HPA when the replica count is a range."""
    documents = [_deployment(plan), _service(plan)]
    if plan.bounds[1] > plan.bounds[0]:
        documents.append(_autoscaler(plan))
    return documents


# ---- compose -------------------------------------------------------------------------


def _healthcheck(port: int, path: str, start: int) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}')"
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": "10s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{start}s",
    }


def _published(host: str | None, port: int, inner: int) -> str:
    """`[IP:]HOST:CONTAINER`; a host name (not an address) publishes on every interface."""
    parts = (host or "").split(".")
    is_ip = len(parts) == 4 and all(p.isdigit() for p in parts)
    return f"{host}:{port}:{inner}" if is_ip else f"{port}:{inner}"


def _gpu_reservation(gpus: int) -> dict[str, Any]:
    device = {"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}
    return {"resources": {"reservations": {"devices": [device]}}}


def compose_document(plan: Plan, host: str | None, port: int | None) -> dict[str, Any]:
    """One service on one host; the build folder (two levels above the file) mounted
    read-only at MOUNT."""
    served = plan.served
    service: dict[str, Any] = {"volumes": [f"../..:{MOUNT}:ro"], "restart": "unless-stopped"}
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
        service |= {
            "image": plan.options.serve_image,
            "command": serve_command(served, inner)[1:],  # the image's entrypoint is `fmc`
            "healthcheck": _healthcheck(inner, "/ready", SERVE_START_SECONDS),
        }
    service["ports"] = [_published(host, port or inner, inner)]
    return {"name": plan.name, "services": {plan.name: service}}


# ---- the deployment ------------------------------------------------------------------


def _yaml(documents: Sequence[dict[str, Any]], deployment: Deployment) -> str:
    header = (
        f"# Generated by fmc from {deployment.file} (deploy {deployment.name}); "
        "rebuild instead of editing.\n"
    )
    body = yaml.safe_dump_all(documents, sort_keys=True, default_flow_style=False, width=1000)
    return header + body


@dataclass(frozen=True)
class _Context:
    spec: Spec
    deployment: Deployment
    served: ServedModel
    knobs: Mapping[str, int | str]
    memory_bytes: float | None
    options: ManifestOptions

    def plan(self, target: DeployTarget) -> Plan:
        """`compose` and `local` have no hardware setting: they run on the hardware the
        deployment names elsewhere (compose) or on this machine's CPU (local)."""
        hardware = target.hardware
        if target.kind == "compose":
            hardware = next((t.hardware for t in self.deployment.targets if t.hardware), None)
        bounds = replicas(self.served, target, self.knobs)
        plan = plan_target(self.spec, self.served, target, hardware, bounds, self.memory_bytes)
        return replace(plan, visibility=self.deployment.visibility, options=self.options)


def _target_files(
    context: _Context, target: DeployTarget, local: DeployTarget | None
) -> dict[str, str]:
    """The files one target writes, keyed by file name; `server.json` when it runs fmc serve."""
    plan, deployment = context.plan(target), context.deployment
    host, port = (local.host, local.port) if local else (None, None)
    files: dict[str, str] = {}
    if target.kind == "kserve":
        document = inference_service(plan)
        validate_inferenceservice(document)
        files["inferenceservice.yaml"] = _yaml([document], deployment)
    elif target.kind == "kubernetes":
        files["kubernetes.yaml"] = _yaml(kubernetes_documents(plan), deployment)
    else:
        document = compose_document(plan, host, target.port or port)
        validate_compose(document)
        files["compose.yaml"] = _yaml([document], deployment)
    if not plan.vllm:
        config = server_config(context.served, host, port)
        files["server.json"] = json_text(config)
    return files


def lower_deployment(
    spec: Spec,
    deployment: Deployment,
    knobs: Mapping[str, int | str],
    adapters: Mapping[str, str] | None = None,
    *,
    memory_bytes: float | None = None,
    options: ManifestOptions | None = None,
) -> dict[str, str]:
    """Path relative to the build folder → file text, for every target of `deployment`.

    `adapters` maps adapter names to folders relative to the build folder (default:
    `server_config.default_adapters`); `memory_bytes` is the verifier's serving-memory
    estimate (`serving_memory`). Raises `StageError` with FM10xx diagnostics."""
    served = resolve_served(spec, deployment, knobs, adapters)
    context = _Context(spec, deployment, served, knobs, memory_bytes, options or ManifestOptions())
    local = next((t for t in deployment.targets if t.kind == "local"), None)
    has_compose = any(t.kind == "compose" for t in deployment.targets)
    files: dict[str, str] = {}
    for target in deployment.targets:
        if target.kind == "local" and has_compose:
            continue  # the compose target's file replaces the local one
        files.update(_target_files(context, target, local))
    return {f"deploy/{deployment.name}/{name}": text for name, text in sorted(files.items())}


def write_files(out_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Write `lower_deployment`'s files under the build folder, atomically."""
    written = []
    for relative, text in sorted(files.items()):
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        written.append(path)
    return written


def lower_deployments(
    spec: Spec,
    knobs: Mapping[str, int | str],
    constraints: Sequence[Mapping[str, Any]] = (),
    adapters: Mapping[str, Mapping[str, str]] | None = None,
    options: ManifestOptions | None = None,
) -> dict[str, str]:
    """Every deployment's files: `knobs` and `constraints` as in verify.json
    (`VerifyReport.knobs`, `VerifyReport.constraints`); `adapters` by deployment name."""
    files: dict[str, str] = {}
    for deployment in spec.deployments:
        paths = adapters.get(deployment.name) if adapters else None
        memory = serving_memory(constraints, deployment.target)
        files |= lower_deployment(
            spec, deployment, knobs, paths, memory_bytes=memory, options=options
        )
    return dict(sorted(files.items()))
