"""Every emitted deployment that runs `fmc serve` starts for real.

One tiny-model spec is built (`fmc build`) and trained (the run stages up to `train`), its
`local(...)` base weights copied into the build folder as docs/build-folder.md says, and the
build folder moved away from the spec, as a mounted volume would be. For the compose file,
the Kubernetes Deployment and the KServe InferenceService, the container's command line is
read from the emitted YAML, the container's mount path is mapped to that build folder
(through the compose bind mount, the Deployment's claim, KServe's model mount for
`STORAGE_URI`), its API key file (the compose secret, the Kubernetes Secret volume) and its
audit log volume to folders here, and exactly that command starts, with `.venv/bin/fmc` in
place of the image's `fmc` and a free loopback port: it must answer its readiness probe and
a completion with the granted principal's key (and refuse one without), with its peak
resident memory below the limit the manifest sets. The Kubernetes objects are
validated with kubernetes-validate, the InferenceService with the kserve SDK's models.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from fmlang.cli.main import cli
from fmlang.lower.sizing import MEMORY_LIMIT_HEADROOM, SERVE_BASELINE_BYTES
from tests.data_helpers import run_spec

pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

FMC = Path(sys.executable).parent / "fmc"
K8S_VERSION = kubernetes_validate.utils.latest_version()
KSERVE_MODEL_MOUNT = "/mnt/models"  # where KServe mounts a container's STORAGE_URI
DEPLOY = "helper"
APP_KEY = "fmc-test-key-for-service-app-0123"  # the API key of `service:app`, granted query
SPEC = """\
import std.models.tiny_causal_lm
import std.hardware.cpu_2core

dataset tickets {
  source jsonl("tickets.jsonl")
  schema {
    id: string @id
    question: text
    answer: text
  }
  split { train 70%, test 30% by hash(id) }
  grant read, train, deploy to "team:ml"
}

model helper {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 64
  train { data = tickets.train, prompt = question, completion = answer, max_steps = 2,
          lr = 1e-3, batch = 4, seed = 3 }
}

deploy helper {
  local { port = 8080 }
  kubernetes { hardware = cpu_2core, replicas = 1 }
  kserve { hardware = cpu_2core, replicas = 1 }
  grant query to "service:app"
}
"""


def _write_project(folder: Path, tiny_model: Path) -> Path:
    folder.mkdir()
    (folder / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "question": f"how do I reset my password {i}?",
             "answer": "open settings, then reset password."} for i in range(24)]  # fmt: skip
    (folder / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = folder / "helper.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A built and trained build folder, alone at a path of its own (the spec's folder is
    gone), with the base weights copied to where server.json names them."""
    root = tmp_path_factory.mktemp("deploy")
    spec = _write_project(root / "project", tiny_model)
    build = root / "project" / "build"
    built = subprocess.run([FMC, "build", str(spec), "-o", str(build)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    run_spec(spec, build, until="train", principal="team:ml")
    server = json.loads((build / "deploy" / DEPLOY / "server.json").read_text())
    assert server["base"]["weights"]["kind"] == "local"
    shutil.copytree(tiny_model, build / server["base"]["weights"]["location"])
    volume = root / "volume"
    shutil.move(build, volume)
    shutil.rmtree(root / "project")
    return volume


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the operator provides: the API key file, as the Secret and the compose secret
    hold it (a folder per mount, each with the file under the name the manifest uses)."""
    root = tmp_path_factory.mktemp("secrets")
    for folder, name in (("secret-volume", "keys"), ("run-secrets", "helper-api-keys")):
        (root / folder).mkdir()
        key_file = root / folder / name
        key_file.write_text(f"service:app {APP_KEY}\n", encoding="utf-8")
        key_file.chmod(0o600)
    return root


def _documents(volume: Path, name: str) -> list[dict[str, Any]]:
    text = (volume / "deploy" / DEPLOY / name).read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


# ---- the container, as each manifest says it ------------------------------------------


@dataclass(frozen=True)
class Container:
    """What a manifest says about its `fmc serve` container."""

    command: list[str]  # the full command line (compose: entrypoint + command)
    mounts: dict[str, Path]  # mount path in the container → the build folder here
    memory_request: float  # MiB
    memory_limit: float  # MiB
    probe: str  # the readiness check's path
    probe_port: int

    @property
    def port(self) -> int:
        return int(self.command[self.command.index("--port") + 1])


def _mebibytes(quantity: str) -> float:
    """`419Mi` (Kubernetes) or `419M` (compose, binary units) in MiB."""
    assert quantity.endswith(("Mi", "M")), quantity
    return float(quantity.removesuffix("i").removesuffix("M"))


def _compose(volume: Path, secrets: Path, audit: Path) -> Container:
    (document,) = _documents(volume, "compose.yaml")
    (service,) = document["services"].values()
    mounts = {}
    for spec in service["volumes"]:
        source, target, *_ = spec.split(":")
        if source in document.get("volumes", {}):  # a named volume: the audit log's
            mounts[target] = audit
        else:  # a bind mount, relative to the file
            mounts[target] = (volume / "deploy" / DEPLOY / source).resolve()
    assert service["secrets"] == ["helper-api-keys"]
    assert document["secrets"]["helper-api-keys"]["file"].startswith("${FMC_API_KEYS_FILE:?")
    mounts["/run/secrets"] = secrets / "run-secrets"  # where compose mounts secrets
    memory = service["deploy"]["resources"]
    check = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", service["healthcheck"]["test"][-1])
    assert check is not None, service["healthcheck"]
    return Container(
        service["entrypoint"] + service["command"], mounts,
        _mebibytes(memory["reservations"]["memory"]), _mebibytes(memory["limits"]["memory"]),
        check[2], int(check[1]),
    )  # fmt: skip


def _from_container(container: dict[str, Any], mounts: dict[str, Path]) -> Container:
    probe = container["readinessProbe"]["httpGet"]
    resources = container["resources"]
    assert [p["containerPort"] for p in container["ports"]] == [probe["port"]]
    return Container(
        container["command"], mounts, _mebibytes(resources["requests"]["memory"]),
        _mebibytes(resources["limits"]["memory"]), probe["path"], probe["port"],
    )  # fmt: skip


def _pod_volume(source: dict[str, Any], secrets: Path, audit: Path) -> Path:
    """A pod's API key Secret or audit emptyDir, as a folder here."""
    if "secret" in source:
        assert source["secret"]["secretName"] == "helper-api-keys", source
        return secrets / "secret-volume"
    assert "emptyDir" in source, source
    return audit


def _kubernetes(volume: Path, secrets: Path, audit: Path) -> Container:
    documents = _documents(volume, "kubernetes.yaml")
    (deployment,) = _kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    claims = {c["metadata"]["name"] for c in _kind(documents, "PersistentVolumeClaim")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]]
        if "persistentVolumeClaim" not in source:
            mounts[mount["mountPath"]] = _pod_volume(source, secrets, audit)
            continue
        claim = source["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"the pod mounts claim `{claim}`, which the file does not create"
        mounts[mount["mountPath"]] = volume  # the claim holds the build folder
    return _from_container(container, mounts)


def _kserve(volume: Path, secrets: Path, audit: Path) -> Container:
    documents = _documents(volume, "inferenceservice.yaml")
    (service,) = _kind(documents, "InferenceService")
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    claims = {c["metadata"]["name"] for c in _kind(documents, "PersistentVolumeClaim")}
    claim = env["STORAGE_URI"].removeprefix("pvc://")
    assert claim in claims, f"STORAGE_URI names claim `{claim}`, which the file does not create"
    volumes = {v["name"]: v for v in predictor["volumes"]}
    mounts = {m["mountPath"]: _pod_volume(volumes[m["name"]], secrets, audit)
              for m in container["volumeMounts"]}  # fmt: skip
    return _from_container(container, {KSERVE_MODEL_MOUNT: volume, **mounts})


MANIFESTS = {"compose": _compose, "kubernetes": _kubernetes, "kserve": _kserve}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_command(command: list[str], mounts: dict[str, Path], port: int) -> list[str]:
    """The container's command on this machine: this venv's fmc, mounts mapped, loopback."""
    assert command[0] == "fmc", command
    mapped = [str(FMC)]
    for arg in command[1:]:
        prefix = next((m for m in mounts if arg == m or arg.startswith(m + "/")), None)
        mapped.append(str(mounts[prefix]) + arg[len(prefix) :] if prefix else arg)
    mapped[mapped.index("--host") + 1] = "127.0.0.1"
    mapped[mapped.index("--port") + 1] = str(port)
    return mapped


def _peak_rss(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    url: str
    container: Container
    log: Path


@pytest.fixture
def started(request: pytest.FixtureRequest, mounted: Path, secrets: Path,
            tmp_path: Path) -> Iterator[Started]:  # fmt: skip
    """A manifest's command, started here; stopped after the test."""
    audit = tmp_path / "audit"
    container = MANIFESTS[request.param](mounted, secrets, audit)
    assert container.probe_port == container.port, "the probe asks another port"
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as output:
        command = _local_command(container.command, container.mounts, port)
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield Started(process, f"http://127.0.0.1:{port}", container, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after 120 s:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("started", sorted(MANIFESTS), indirect=True)
def test_the_emitted_command_serves_within_its_memory_limit(started: Started) -> None:
    _wait_ready(started.process, started.url + started.container.probe, started.log)
    body = {"model": DEPLOY, "prompt": "how do I reset", "max_tokens": 8, "temperature": 0}
    refused = httpx.post(f"{started.url}/v1/completions", json=body, timeout=60)
    assert refused.status_code == 401, refused.text
    key = {"Authorization": f"Bearer {APP_KEY}"}
    for _ in range(5):
        answer = httpx.post(f"{started.url}/v1/completions", json=body, headers=key, timeout=60)
        assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == DEPLOY
    peak, limit = _peak_rss(started.process.pid), started.container.memory_limit
    assert peak < limit, f"peak RSS {peak:.0f} MiB is above the manifest's limit {limit:.0f} MiB"


# ---- what each promise rests on -------------------------------------------------------


def test_server_json_names_only_paths_inside_the_build_folder(mounted: Path) -> None:
    server = json.loads((mounted / "deploy" / DEPLOY / "server.json").read_text())
    paths = [*server["adapters"].values(), server["base"]["weights"]["location"]]
    for path in paths:
        assert not Path(path).is_absolute() and ".." not in Path(path).parts, path
        assert (mounted / path).is_dir(), path


@pytest.mark.parametrize("name", ["kubernetes.yaml", "inferenceservice.yaml"])
def test_kubernetes_objects_validate(mounted: Path, name: str) -> None:
    documents = [d for d in _documents(mounted, name) if d["kind"] != "InferenceService"]
    assert "PersistentVolumeClaim" in [d["kind"] for d in documents]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_memory_is_the_model_footprint_plus_the_measured_baseline(
    mounted: Path, tmp_path: Path
) -> None:
    from fmlang.api import check_text, compile_spec
    from fmlang.lower.server_config import resolve_served

    result = check_text(SPEC, file="helper.fm", base=tmp_path, verify=True)
    assert result.ok and result.report is not None, result.diagnostics
    spec = compile_spec(result)
    served = resolve_served(spec, spec.deployments[0], dict(result.report.knobs))
    assert served.memory_bytes is not None
    needed = served.memory_bytes + SERVE_BASELINE_BYTES
    for read in MANIFESTS.values():
        container = read(mounted, tmp_path, tmp_path)
        assert container.memory_request == math.ceil(needed / 2**20)
        assert container.memory_limit == math.ceil(needed * MEMORY_LIMIT_HEADROOM / 2**20)


# ---- the KServe resource, through the kserve SDK's models ------------------------------


def _sdk_model(data: Any, kind: str, where: str = "") -> Any:
    """`data` as the kserve SDK model named `kind`, refusing every key the model does not
    define (the SDK's own deserialiser drops them silently); the Kubernetes types it embeds
    go through the kubernetes client's models, which forbid unknown fields and check types."""
    import kserve.models
    import kubernetes.client.models

    if listed := re.fullmatch(r"list\[(.+)\]", kind):
        return [_sdk_model(item, listed[1], f"{where}[{i}]") for i, item in enumerate(data)]
    if mapped := re.fullmatch(r"dict\(([^,]+), (.+)\)", kind):
        return {key: _sdk_model(value, mapped[2], f"{where}.{key}") for key, value in data.items()}
    if kind in ("str", "int", "bool", "float", "object"):
        return data
    model = getattr(kserve.models, kind, None)
    if model is None:
        return getattr(kubernetes.client.models, kind).model_validate(data)
    by_key = {key: attribute for attribute, key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(by_key))
    assert not unknown, f"{where or kind}: {kind} has no field {unknown}"
    values = {by_key[key]: _sdk_model(value, model.openapi_types[by_key[key]], f"{where}.{key}")
              for key, value in data.items()}  # fmt: skip
    return model(**values)  # the generated setters check required fields and enums


def _inference_service(volume: Path) -> dict[str, Any]:
    (service,) = _kind(_documents(volume, "inferenceservice.yaml"), "InferenceService")
    return service


def test_inferenceservice_deserialises_into_the_kserve_sdk_models(mounted: Path) -> None:
    from kserve import V1beta1InferenceService
    from kserve.api_client import ApiClient

    document = _inference_service(mounted)
    typed = _sdk_model(document, "V1beta1InferenceService")
    assert isinstance(typed, V1beta1InferenceService)
    assert ApiClient().sanitize_for_serialization(typed) == document  # nothing was dropped


def test_the_sdk_check_refuses_a_misspelt_field(mounted: Path) -> None:
    document = _inference_service(mounted)
    document["spec"]["predictor"]["containers"][0]["comand"] = ["fmc"]
    with pytest.raises((AssertionError, ValidationError), match="comand"):
        _sdk_model(document, "V1beta1InferenceService")


# ---- `fmc serve --config` refuses what it cannot serve, with a code ---------------------


def _serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["serve", *args])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    return result.exit_code, result.output


def test_an_unreadable_config_is_fm1001(tmp_path: Path) -> None:
    code, output = _serve("--config", str(tmp_path / "absent" / "server.json"))
    assert (code, "error[FM1001]" in output) == (2, True), output


def test_an_invalid_config_is_fm1002(tmp_path: Path, mounted: Path) -> None:
    broken = tmp_path / "deploy" / DEPLOY / "server.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"schema_version": "1", "base": []}', encoding="utf-8")
    code, output = _serve("--config", str(broken))
    assert (code, "error[FM1002]" in output) == (1, True), output
    moved = tmp_path / "server.json"  # a build's server.json away from its build folder
    shutil.copy(mounted / "deploy" / DEPLOY / "server.json", moved)
    code, output = _serve("--config", str(moved))
    assert (code, "error[FM1002]" in output, "outside its build folder" in output) == (
        1, True, True
    ), output  # fmt: skip


def test_missing_weights_and_adapters_are_named(tmp_path: Path, mounted: Path) -> None:
    copy = tmp_path / "build"
    shutil.copytree(mounted / "deploy", copy / "deploy")
    config = str(copy / "deploy" / DEPLOY / "server.json")
    code, output = _serve("--config", config)
    assert (code, "error[FM0710]" in output) == (2, True), output  # no trained adapter
    shutil.copytree(mounted / "run" / "models", copy / "run" / "models")
    code, output = _serve("--config", config)
    assert (code, "error[FM1006]" in output, "weights/tiny_causal_lm" in output) == (
        2, True, True
    ), output  # fmt: skip


def test_a_spec_and_a_config_together_are_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "x.fm", "--config", "server.json"])
    assert result.exit_code == 2 and "not both" in result.output
    assert CliRunner().invoke(cli, ["serve"]).exit_code == 2


def test_the_spec_and_the_config_alone_enforce_the_same_grants(mounted: Path) -> None:
    """`fmc serve FILE` and `fmc serve --config` build their gate from the same fields: the
    principals the access model grants `query`, the visibility, the build's audit log."""
    from fmlang.api import check_text, compile_spec
    from fmlang.backends.serve_config import serve_config, serve_config_file
    from fmlang.verify.access import AccessModel

    from_spec = serve_config(mounted, DEPLOY)
    alone = serve_config_file(mounted / "deploy" / DEPLOY / "server.json")
    fields = ("deploy", "query_principals", "visibility", "audit_log")
    assert [getattr(from_spec, f) for f in fields] == [getattr(alone, f) for f in fields]
    result = check_text(SPEC, file="helper.fm", base=mounted, verify=False)
    granted = AccessModel(compile_spec(result)).allowed(f"query:{DEPLOY}")
    assert alone.query_principals == tuple(sorted(granted)) == ("service:app",)
    assert alone.audit_log == str(mounted / "audit.log")
