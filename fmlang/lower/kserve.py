"""Typed models of the manifests no bundled JSON schema checks: KServe's `InferenceService`
(`serving.kserve.io/v1beta1`) and the subset of the compose specification fmc emits.

Kubernetes' own kinds (Deployment, Service, HorizontalPodAutoscaler) are validated against
the schemas `kubernetes-validate` bundles; KServe's CRD and the compose-spec JSON schema are
not available offline, so these models stand in for them. Each model forbids extra fields
and types exactly the fields fmc writes, with the names and types of KServe's Go API
(`pkg/apis/serving/v1beta1`: `InferenceServiceSpec`, `PredictorSpec`,
`ComponentExtensionSpec`, `ModelSpec`, `PredictorExtensionSpec`) and of the compose spec
(`services.<name>`: image, entrypoint, command, ports, environment, volumes, healthcheck,
deploy, restart). `validate_inferenceservice` / `validate_compose` parse a loaded YAML
document and raise `pydantic.ValidationError` on anything else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def pinned(image: str) -> str:
    """An image reference with a tag or digest that is not `latest`: a rebuild of the
    manifests must run the same server."""
    name, _, tag = image.rpartition(":")
    if "@sha256:" in image:
        return image
    if not name or "/" in tag or tag == "latest":
        raise ValueError(f"image {image!r} is not pinned to a tag other than `latest`")
    return image


Image = Annotated[str, StringConstraints(pattern=r"^\S+$"), AfterValidator(pinned)]
PortMapping = Annotated[str, StringConstraints(pattern=r"^(\d{1,3}(\.\d{1,3}){3}:)?\d+:\d+$")]
Duration = Annotated[str, StringConstraints(pattern=r"^\d+(ms|s|m|h)$")]
ByteValue = Annotated[str, StringConstraints(pattern=r"^\d+[bkmgBKMG]?$")]  # compose: M is MiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ---- Kubernetes core types KServe embeds ---------------------------------------------


class ObjectMeta(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class EnvVar(_Strict):
    name: str
    value: str


class ResourceRequirements(_Strict):
    """Quantities as strings (`"2"`, `"3072Mi"`); GPUs as `nvidia.com/gpu`."""

    requests: dict[str, str] = {}
    limits: dict[str, str] = {}


class HTTPGetAction(_Strict):
    path: str
    port: int | str


class Probe(_Strict):
    httpGet: HTTPGetAction
    initialDelaySeconds: int | None = None
    periodSeconds: int | None = None
    failureThreshold: int | None = None
    timeoutSeconds: int | None = None


class ContainerPort(_Strict):
    containerPort: int = Field(ge=1, le=65535)
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None


class VolumeMount(_Strict):
    name: str
    mountPath: str
    readOnly: bool | None = None


class SecretVolumeSource(_Strict):
    secretName: str
    defaultMode: int | None = Field(default=None, ge=0, le=0o777)


class EmptyDirVolumeSource(_Strict):
    medium: str | None = None


class Volume(_Strict):
    """`v1.Volume` with the sources fmc uses in a custom predictor: a Secret (the API key
    file) and an emptyDir (the audit log)."""

    name: str
    secret: SecretVolumeSource | None = None
    emptyDir: EmptyDirVolumeSource | None = None

    def model_post_init(self, context: Any, /) -> None:
        if (self.secret is None) == (self.emptyDir is None):
            raise ValueError("a volume sets exactly one source")


class Container(_Strict):
    """The `v1.Container` fields fmc writes into a custom predictor."""

    name: str
    image: Image
    command: list[str] | None = None
    args: list[str] = []
    env: list[EnvVar] = []
    ports: list[ContainerPort] = []
    resources: ResourceRequirements | None = None
    livenessProbe: Probe | None = None
    readinessProbe: Probe | None = None
    startupProbe: Probe | None = None
    volumeMounts: list[VolumeMount] = []


# ---- KServe v1beta1 ----------------------------------------------------------------


class ModelFormat(_Strict):
    name: str
    version: str | None = None


class ModelSpec(_Strict):
    """`ModelSpec`: a model format served by a (cluster) serving runtime, plus the
    `PredictorExtensionSpec` and container fields fmc sets."""

    modelFormat: ModelFormat
    runtime: str | None = None
    storageUri: str | None = None
    protocolVersion: Literal["v1", "v2", "grpc-v1", "grpc-v2"] | None = None
    args: list[str] = []
    env: list[EnvVar] = []
    resources: ResourceRequirements | None = None


class PredictorSpec(_Strict):
    """`PredictorSpec` with its inline `ComponentExtensionSpec` (replicas, scaling) and the
    `PodSpec` field `containers` (a custom predictor). Exactly one of `model` or
    `containers` is set."""

    minReplicas: int | None = Field(default=None, ge=0)
    maxReplicas: int | None = Field(default=None, ge=0)
    scaleTarget: int | None = Field(default=None, ge=1)
    scaleMetric: Literal["cpu", "memory", "concurrency", "rps"] | None = None
    containerConcurrency: int | None = Field(default=None, ge=0)
    model: ModelSpec | None = None
    containers: list[Container] | None = None
    volumes: list[Volume] = []

    def model_post_init(self, context: Any, /) -> None:
        if (self.model is None) == (self.containers is None):
            raise ValueError("a predictor sets exactly one of `model` and `containers`")
        low, high = self.minReplicas, self.maxReplicas
        if low is not None and high is not None and high < low:
            raise ValueError("maxReplicas is below minReplicas")


class InferenceServiceSpec(_Strict):
    predictor: PredictorSpec


class InferenceService(_Strict):
    apiVersion: Literal["serving.kserve.io/v1beta1"]
    kind: Literal["InferenceService"]
    metadata: ObjectMeta
    spec: InferenceServiceSpec


def validate_inferenceservice(document: dict[str, Any]) -> InferenceService:
    """The typed InferenceService; raises `pydantic.ValidationError` when it is not one."""
    return InferenceService.model_validate(document)


# ---- compose (the subset fmc writes) -------------------------------------------------


class ComposeDevice(_Strict):
    driver: str
    count: int | Literal["all"]
    capabilities: list[str]


class ComposeReservations(_Strict):
    devices: list[ComposeDevice] = []
    memory: ByteValue | None = None
    cpus: str | None = None


class ComposeLimits(_Strict):
    memory: ByteValue | None = None
    cpus: str | None = None


class ComposeResources(_Strict):
    reservations: ComposeReservations | None = None
    limits: ComposeLimits | None = None


class ComposeDeploy(_Strict):
    resources: ComposeResources


class ComposeHealthcheck(_Strict):
    test: list[str] = Field(min_length=2)
    interval: Duration
    timeout: Duration
    retries: int = Field(ge=1)
    start_period: Duration


class ComposeService(_Strict):
    image: Image
    entrypoint: list[str] | None = None
    command: list[str]
    ports: list[PortMapping] = []  # short syntax: [IP:]HOST:CONTAINER
    environment: dict[str, str] = {}
    volumes: list[str] = []
    working_dir: str | None = None
    healthcheck: ComposeHealthcheck
    deploy: ComposeDeploy | None = None
    restart: Literal["no", "always", "on-failure", "unless-stopped"]
    ipc: str | None = None
    secrets: list[str] = []  # short syntax: mounted at /run/secrets/<name>


class ComposeSecret(_Strict):
    file: str  # a path on the host, or `${VAR:?message}` naming one


class ComposeVolume(_Strict):
    driver: str | None = None


class ComposeFile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    services: dict[str, ComposeService] = Field(min_length=1)
    secrets: dict[str, ComposeSecret] = {}
    volumes: dict[str, ComposeVolume] = {}

    def model_post_init(self, context: Any, /) -> None:
        for name, service in self.services.items():
            missing = set(service.secrets) - set(self.secrets)
            if missing:
                raise ValueError(f"service `{name}` uses undeclared secrets {sorted(missing)}")


def validate_compose(document: dict[str, Any]) -> ComposeFile:
    """The typed compose file; raises `pydantic.ValidationError` when it is not one."""
    return ComposeFile.model_validate(document)
