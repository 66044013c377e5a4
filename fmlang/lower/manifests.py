"""Deployment manifests: a `deploy` block → `deploy/<deploy>/…` in the build folder.

Which files each target writes:
- `kserve`     → `inferenceservice.yaml`: a KServe v1beta1 InferenceService (and the build
  folder's PersistentVolumeClaim when `storage_uri` is that claim). On a GPU profile it
  uses the `huggingface` model format (KServe's huggingfaceserver runtime with its vLLM
  backend) and vLLM's LoRA options; on a CPU profile a custom predictor container running
  `fmc serve --config`.
- `kubernetes` → `kubernetes.yaml`: the build folder's PersistentVolumeClaim, a Deployment
  (vLLM's OpenAI server on a GPU profile, `fmc serve --config` otherwise), a Service, and a
  HorizontalPodAutoscaler when `replicas` is a range.
- `local`      → `server.json` (the `fmc serve` configuration) and `compose.yaml`, the same
  server in a container on one host.
- `compose`    → `compose.yaml` on the hardware the deployment names elsewhere (the first target
  with a `hardware` setting): vLLM with reserved GPUs on a GPU profile, `fmc serve` otherwise.
Every target that runs `fmc serve` also gets `server.json`, which the container reads as
`fmc serve --config /mnt/models/deploy/<deploy>/server.json`.

Conventions (all overridable through `ManifestOptions`):
- The build folder is published where the cluster can read it: a PersistentVolumeClaim
  (`<deploy>-build`, emitted with the manifests, sized for what the server reads; the user
  copies the build folder into it, docs/build-folder.md), or for KServe any `storage_uri`
  (`s3://`, `gs://`); compose bind-mounts the folder itself. It is mounted at `/mnt/models`,
  KServe's model mount. Adapters are passed to vLLM as `name=/mnt/models/<path in the build
  folder>`; merged weights are the predictor's `storageUri` (`<storage_uri>/<path>`).
- A base model loaded dynamically comes from its `hub(...)` weights (and revision).
- Images are pinned: `vllm/vllm-openai:v0.9.2` for GPUs, `ghcr.io/fmlang/fmc:<version>` for
  `fmc serve`. Never `latest`.
- Replicas: the solver's choice (`<target>.<kind>.replicas`) as a fixed count, a written range
  `lo..hi` as autoscaling bounds, and an `auto` range no constraint depended on as its bounds.
- Memory (`fmlang.lower.sizing`): the model's footprint is the verifier's serving-memory
  estimate when a memory constraint gave one, else the same cost-model formula at the chosen
  knobs. An `fmc serve` container requests that plus the server process's measured baseline
  and is limited a quarter above; without a footprint (a base model with no parameter
  count) it requests the hardware profile's memory. On GPUs the request is host memory,
  which the weights pass through as they load; GPUs are `nvidia.com/gpu` requests and limits.
- GPU autoscaling (HPA) follows the per-pod metric `vllm:num_requests_running` (vLLM's
  Prometheus metric, served through a metrics adapter such as prometheus-adapter) with the
  serving batch as target; CPU autoscaling follows CPU utilization. KServe scales on
  concurrency with the serving batch as target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from fmlang.atomic import json_text, write_text_atomic
from fmlang.ir.nodes import Deployment, DeployTarget, Spec
from fmlang.lower.compose import compose_document
from fmlang.lower.deploy_plan import (
    ManifestOptions,
    Plan,
    container,
    labels,
    metadata,
    plan_target,
    resources,
    serve_volumes,
)
from fmlang.lower.kserve import validate_compose, validate_inferenceservice
from fmlang.lower.server_config import (
    MOUNT,
    ServedModel,
    engine_args,
    fail,
    model_reference,
    replicas,
    resolve_served,
    served_model_name,
    server_config,
    serving_memory,
    target_span,
    vllm_env,
)
from fmlang.lower.sizing import claim_gibibytes

__all__ = [
    "ManifestOptions", "Plan", "lower_deployment", "lower_deployments", "serving_memory",
    "write_files",
]  # fmt: skip

CPU_SCALE_UTILIZATION = 80  # percent of the CPU request before the HPA adds a replica


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
    args = [f"--model_name={served_model_name(served)}", f"--backend={backend}"]
    storage = plan.storage_uri
    if served.merged:  # the merged weights are the model KServe mounts at MOUNT
        storage = f"{plan.storage_uri}/{served.merged_path}"
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
        storage = {"name": "STORAGE_URI", "value": plan.storage_uri}  # → MOUNT
        serving = container(plan)
        serving |= {"name": "kserve-container", "env": [storage]}
        predictor["containers"] = [serving]
        predictor["volumes"] = serve_volumes(plan)  # the API key Secret, the audit log
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(plan, **extra),
        "spec": {"predictor": predictor},
    }


# ---- Kubernetes ----------------------------------------------------------------------


def _pod(plan: Plan) -> dict[str, Any]:
    """The serving container with the build folder (a read-only claim) at MOUNT."""
    serving = container(plan)
    claim = {"claimName": plan.claim, "readOnly": True}
    mounts = [{"name": "artifacts", "mountPath": MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "artifacts", "persistentVolumeClaim": claim}]
    if plan.vllm:  # vLLM's workers share tensors through /dev/shm
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    else:  # fmc serve: the API key Secret and the audit log's volume
        mounts += serving.pop("volumeMounts")
        volumes += serve_volumes(plan)
    return {"containers": [{**serving, "volumeMounts": mounts}], "volumes": volumes}


def _deployment(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(plan),
        "spec": {
            "replicas": plan.bounds[0],
            "selector": {"matchLabels": {"app.kubernetes.io/name": plan.name}},
            "template": {"metadata": {"labels": labels(plan)}, "spec": _pod(plan)},
        },
    }


def _service(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(plan),
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
        "metadata": metadata(plan),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
            "minReplicas": plan.bounds[0],
            "maxReplicas": plan.bounds[1],
            "metrics": [_hpa_metric(plan)],
        },
    }


def volume_claim(plan: Plan) -> dict[str, Any]:
    """The claim the build folder is copied into (docs/build-folder.md): sized for what the
    server reads; ReadWriteMany when more than one pod mounts it at once (pods on several
    nodes), else ReadWriteOnce, which every storage class offers."""
    size = claim_gibibytes(plan.served)
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany" if plan.pods > 1 else "ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size}Gi"}},
    }
    if plan.options.storage_class:
        spec["storageClassName"] = plan.options.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {**metadata(plan), "name": plan.claim},
        "spec": spec,
    }


def kubernetes_documents(plan: Plan) -> list[dict[str, Any]]:
    """The build folder's claim, Deployment and Service, plus an HPA when the replica
    count is a range."""
    documents = [volume_claim(plan), _deployment(plan), _service(plan)]
    if plan.bounds[1] > plan.bounds[0]:
        documents.append(_autoscaler(plan))
    return documents


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
        return replace(plan, visibility=self.deployment.visibility, options=self.options,
                       pods=self.pods())  # fmt: skip

    def pods(self) -> int:
        """The most pods that mount the build folder's claim at once: every cluster
        target's largest replica count, added up."""
        clustered = [t for t in self.deployment.targets if t.kind in ("kubernetes", "kserve")]
        return sum(replicas(self.served, t, self.knobs)[1] for t in clustered)


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
        claimed = plan.storage_uri == f"pvc://{plan.claim}"  # not s3://, gs://, …
        files["inferenceservice.yaml"] = _yaml(
            [volume_claim(plan), document] if claimed else [document], deployment
        )
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
        memory = _worst_memory(spec, constraints, deployment.target)
        files |= lower_deployment(
            spec, deployment, knobs, paths, memory_bytes=memory, options=options
        )
    return dict(sorted(files.items()))


def _worst_memory(
    spec: Spec, constraints: Sequence[Mapping[str, Any]], target: str
) -> float | None:
    """The verifier's serving-memory estimate of `target`; for a model that selects its base,
    the largest of its candidates' (whichever `fmc run` picks is served)."""
    names = [m.name for m in spec.models if m.candidate_of == target] or [target]
    found = [e for n in names if (e := serving_memory(constraints, n)) is not None]
    return max(found) if len(found) == len(names) else None
