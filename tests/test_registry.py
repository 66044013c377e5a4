"""The content-addressed adapter registry (hashing, atomic objects, resolving versions,
lineage, metrics, staleness) and `fmc log` / `fmc diff` through click."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from fmlang.backends import registry as registry_module
from fmlang.backends.registry import (
    BaseModelRef,
    Lineage,
    Registry,
    Version,
    adapter_hash,
    open_registry,
)
from fmlang.cli.registry import diff_command, log_command
from fmlang.errors import StageError


def fake_adapter(folder: Path, payload: bytes = b"weights", rank: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return folder


def lineage(name: str = "writer", **changes: Any) -> Lineage:
    base = Lineage(
        name=name,
        spec_hash="sha256:spec",
        data_hashes={"data/train.jsonl": "sha256:data1"},
        base_model=BaseModelRef("tiny_causal_lm", "local:tiny-causal-lm", "r1"),
        settings={"rank": 4, "lr": 0.0002},
        inputs_hash="inputs-1",
    )
    return Lineage(**{**base.__dict__, **changes})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "build" / "registry")


def codes(caught: pytest.ExceptionInfo[StageError]) -> list[str]:
    return [d.code for d in caught.value.diagnostics]


# ---- content addressing ---------------------------------------------------------------


def test_same_files_same_hash_and_one_byte_a_new_one(tmp_path: Path, registry: Registry) -> None:
    one = fake_adapter(tmp_path / "one")
    two = fake_adapter(tmp_path / "two")
    assert adapter_hash(one) == adapter_hash(two)
    first = registry.register(one, lineage())
    again = registry.register(two, lineage())
    assert again == first and len(registry.versions()) == 1
    assert first.path == registry.objects / first.hash
    assert (first.path / "adapter_model.safetensors").read_bytes() == b"weights"
    changed = fake_adapter(tmp_path / "three", payload=b"weightz")
    assert adapter_hash(changed) != first.hash
    second = registry.register(changed, lineage())
    assert second.hash != first.hash and second.ref == "writer@2"
    assert [v.ref for v in registry.versions()] == ["writer@1", "writer@2"]


def test_file_names_are_part_of_the_hash(tmp_path: Path) -> None:
    one = fake_adapter(tmp_path / "one")
    two = fake_adapter(tmp_path / "two")
    (two / "adapter_model.safetensors").rename(two / "adapter_model.bin")
    assert adapter_hash(one) != adapter_hash(two)


def test_a_crash_while_copying_leaves_no_half_object(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = registry.register(fake_adapter(tmp_path / "kept", b"kept"), lineage())
    index_before = (registry.root / "index.json").read_text()
    copied: list[Path] = []
    real_copy = registry_module._copy_file

    def copy_then_fail(source: Path, target: Path) -> None:
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(target)
        real_copy(source, target)

    monkeypatch.setattr(registry_module, "_copy_file", copy_then_fail)
    adapter = fake_adapter(tmp_path / "new", b"new")
    with pytest.raises(StageError) as caught:
        registry.register(adapter, lineage())
    assert codes(caught) == ["FM0851"] and "No space left" in caught.value.diagnostics[0].message
    assert copied, "the first file was copied before the failure"
    assert sorted(p.name for p in registry.objects.iterdir()) == [kept.hash]
    assert (registry.root / "index.json").read_text() == index_before

    def interrupted(source: Path, target: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(registry_module, "_copy_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        registry.register(adapter, lineage())
    assert sorted(p.name for p in registry.objects.iterdir()) == [kept.hash]
    monkeypatch.setattr(registry_module, "_copy_file", real_copy)
    assert registry.register(adapter, lineage()).ref == "writer@2"


def test_an_object_without_its_index_entry_is_registered_again(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = fake_adapter(tmp_path / "a")

    def die(self: Registry, entries: list[dict[str, Any]]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Registry, "_write_index", die)
    with pytest.raises(KeyboardInterrupt):
        registry.register(adapter, lineage())
    monkeypatch.undo()
    assert registry.versions() == []
    version = registry.register(adapter, lineage())
    assert version.ref == "writer@1" and registry.versions() == [version]


def test_concurrent_registrations_all_land_in_the_index(tmp_path: Path, registry: Registry) -> None:
    folders = [fake_adapter(tmp_path / f"a{i}", f"w{i}".encode()) for i in range(8)]
    threads = [
        threading.Thread(target=registry.register, args=(f, lineage(f"m{i % 2}")))
        for i, f in enumerate(folders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = registry.versions()
    assert len(versions) == 8
    assert sorted(v.lineage.seq for v in versions) == list(range(1, 9))
    assert sorted(v.number for v in versions if v.name == "m0") == [1, 2, 3, 4]


# ---- resolving ------------------------------------------------------------------------


def two_with_a_common_prefix(tmp_path: Path) -> tuple[Path, Path]:
    """Two adapters whose hashes share their first 4 hex digits (found by trying)."""
    seen: dict[str, Path] = {}
    for i in range(20000):
        folder = fake_adapter(tmp_path / "try" / str(i), f"payload {i}".encode())
        prefix = adapter_hash(folder)[:4]
        if prefix in seen:
            return seen[prefix], folder
        seen[prefix] = folder
    raise AssertionError("no two hashes share 4 hex digits")


def test_resolve_by_hash_prefix_name_and_number(tmp_path: Path, registry: Registry) -> None:
    first = registry.register(fake_adapter(tmp_path / "a", b"a"), lineage())
    second = registry.register(fake_adapter(tmp_path / "b", b"b"), lineage())
    other = registry.register(fake_adapter(tmp_path / "c", b"c"), lineage("reader"))
    assert registry.resolve(first.hash) == first
    assert registry.resolve(first.hash[:8]) == first
    assert registry.resolve("sha256:" + second.hash[:10].upper()) == second
    assert registry.resolve("writer") == second  # the latest
    assert registry.resolve("writer@1") == first
    assert registry.resolve("reader@1") == other
    with pytest.raises(StageError) as caught:
        registry.resolve("writr")
    assert codes(caught) == ["FM0849"] and "did you mean `writer`" in str(caught.value)
    for missing in ("writer@3", "ffffffffff", first.hash[:3]):
        with pytest.raises(StageError) as caught:
            registry.resolve(missing)
        assert codes(caught) == ["FM0849"]


def test_an_ambiguous_prefix_is_refused(tmp_path: Path, registry: Registry) -> None:
    one, two = two_with_a_common_prefix(tmp_path)
    a = registry.register(one, lineage())
    b = registry.register(two, lineage())
    with pytest.raises(StageError) as caught:
        registry.resolve(a.hash[:4])
    assert codes(caught) == ["FM0850"]
    assert {a.hash[:16], b.hash[:16]} == {n.split()[0] for n in caught.value.diagnostics[0].notes}
    assert registry.resolve(a.hash[:12]) == a


# ---- lineage, metrics, staleness ------------------------------------------------------


def test_lineage_round_trips(tmp_path: Path, registry: Registry) -> None:
    parent = registry.register(fake_adapter(tmp_path / "p"), lineage())
    written = lineage("merged", kind="merge", parents=(parent.hash,), settings={"method": "ties"})
    version = registry.register(fake_adapter(tmp_path / "m", b"merged"), written)
    reread = open_registry(tmp_path / "build").resolve("merged").lineage
    assert reread == version.lineage
    assert reread.parents == (parent.hash,) and reread.kind == "merge"
    assert reread.base_model == BaseModelRef("tiny_causal_lm", "local:tiny-causal-lm", "r1")
    assert (reread.seq, reread.created is not None) == (2, True)
    assert Lineage.from_json(json.loads(json.dumps(reread.to_json()))) == reread


def test_metrics_are_attached_later(tmp_path: Path, registry: Registry) -> None:
    version = registry.register(fake_adapter(tmp_path / "a"), lineage())
    registry.attach_metrics(version, {"perplexity": 12.5})
    updated = registry.attach_metrics(version, {"accuracy": 0.91})
    assert updated.lineage.metrics == {"perplexity": 12.5, "accuracy": 0.91}
    assert registry.resolve(version.hash).lineage.metrics == updated.lineage.metrics
    assert adapter_hash(version.path) == version.hash, "metrics do not change the hash"


def test_stale_when_no_version_was_built_from_these_inputs(
    tmp_path: Path, registry: Registry
) -> None:
    assert registry.stale("writer", "inputs-1")
    registry.register(fake_adapter(tmp_path / "a"), lineage(inputs_hash="inputs-1"))
    assert not registry.stale("writer", "inputs-1")
    assert registry.stale("writer", "inputs-2"), "a changed dataset or base model"
    assert registry.stale("reader", "inputs-1")
    registry.register(fake_adapter(tmp_path / "b", b"b"), lineage(inputs_hash="inputs-2"))
    assert not registry.stale("writer", "inputs-1") and not registry.stale("writer", "inputs-2")


def test_missing_and_damaged_registries(tmp_path: Path, registry: Registry) -> None:
    from fmlang.diagnostics.codes import is_io

    with pytest.raises(StageError) as caught:
        open_registry(tmp_path / "nowhere")
    assert codes(caught) == ["FM0848"] and is_io("FM0848")
    with pytest.raises(StageError) as caught:
        registry.register(tmp_path / "not-an-adapter", lineage())
    assert codes(caught) == ["FM0851"]
    version = registry.register(fake_adapter(tmp_path / "a"), lineage())
    (version.path / "lineage.json").write_text("{", encoding="utf-8")
    with pytest.raises(StageError) as caught:
        registry.versions()
    assert codes(caught) == ["FM0852"]
    (registry.root / "index.json").write_text('{"versions": [{"hash": 1}]}', encoding="utf-8")
    with pytest.raises(StageError) as caught:
        registry.resolve("writer")
    assert codes(caught) == ["FM0852"]


# ---- fmc log / fmc diff ---------------------------------------------------------------


@pytest.fixture
def fmc() -> click.Group:
    group = click.Group("fmc")
    group.add_command(log_command)
    group.add_command(diff_command)
    return group


def lora_adapter(folder: Path, seed: int, alpha: float = 8) -> Path:
    """A LoRA adapter as peft saves it: two modules, rank 4, random factors."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in ("q_proj", "v_proj"):
        key = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(4, 16, generator=generator)
        tensors[f"{key}.lora_B.weight"] = torch.randn(16, 4, generator=generator)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": alpha, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def registered_pair(tmp_path: Path) -> tuple[Path, Version, Version]:
    build = tmp_path / "build"
    registry = open_registry(build, create=True)
    a = registry.register(lora_adapter(tmp_path / "a", 1), lineage())
    b = registry.register(
        lora_adapter(tmp_path / "b", 2, alpha=16),
        lineage(settings={"rank": 4, "lr": 0.0001}, data_hashes={"data/train.jsonl": "sha256:d2"}),
    )
    registry.attach_metrics(a, {"perplexity": 14.0, "accuracy": 0.8})
    registry.attach_metrics(b, {"perplexity": 12.5})
    return build, a, b


def test_log_lists_versions(tmp_path: Path, fmc: click.Group) -> None:
    build, a, b = registered_pair(tmp_path)
    runner = CliRunner()
    result = runner.invoke(fmc, ["log", str(build), "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["versions"]
    assert [(v["hash"], v["ref"]) for v in listed] == [(a.hash, "writer@1"), (b.hash, "writer@2")]
    assert listed[0]["lineage"]["metrics"] == {"accuracy": 0.8, "perplexity": 14.0}
    rich = CliRunner(env={"COLUMNS": "200"}).invoke(fmc, ["log", str(build)])
    assert rich.exit_code == 0 and a.short in rich.output and "perplexity=12.5" in rich.output
    assert "writer@2" in rich.output and "data1" in rich.output
    only = runner.invoke(fmc, ["log", str(build), "--name", "writr"])
    assert only.exit_code == 1 and "FM0849" in only.output and "writer" in only.output


def test_log_without_a_registry_exits_2(tmp_path: Path, fmc: click.Group) -> None:
    result = CliRunner().invoke(fmc, ["log", str(tmp_path)])
    assert result.exit_code == 2 and "error[FM0848]" in result.output
    assert "Traceback" not in result.output
    spec = CliRunner().invoke(fmc, ["log", str(tmp_path / "spec.fm"), "--format", "json"])
    assert spec.exit_code == 2
    assert json.loads(spec.output)["diagnostics"][0]["code"] == "FM0848"


def test_diff_compares_settings_metrics_and_weights(tmp_path: Path, fmc: click.Group) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    build, a, b = registered_pair(tmp_path)
    result = CliRunner().invoke(
        fmc, ["diff", str(build), "writer@1", b.hash[:8], "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    changed = {row["key"]: (row["a"], row["b"]) for row in document["settings"]}
    assert changed == {"settings.lr": (0.0002, 0.0001)}
    assert document["data"]["hashes"] == [
        {"stage": "data/train.jsonl", "a": "sha256:data1", "b": "sha256:d2", "same": False}
    ]
    metrics = {row["name"]: row for row in document["metrics"]}
    assert metrics["perplexity"]["delta"] == pytest.approx(-1.5)
    assert metrics["accuracy"] == {"name": "accuracy", "a": 0.8, "b": None, "delta": None}
    ta, tb = (
        load_file(str(a.path / "adapter_model.safetensors")),
        load_file(str(b.path / "adapter_model.safetensors")),
    )
    rows = {row["name"]: row for row in document["weights"]}
    assert sorted(rows) == [f"model.layers.0.self_attn.{m}" for m in ("q_proj", "v_proj")]
    for name, row in rows.items():
        key = f"base_model.model.{name}"
        delta_a = ta[f"{key}.lora_B.weight"] @ ta[f"{key}.lora_A.weight"] * (8 / 4)
        delta_b = tb[f"{key}.lora_B.weight"] @ tb[f"{key}.lora_A.weight"] * (16 / 4)
        expected = float(torch.linalg.norm(delta_a - delta_b))
        assert row["diff"] == pytest.approx(expected, rel=1e-5)
        largest = max(float(delta_a.norm()), float(delta_b.norm()))
        assert row["relative"] == pytest.approx(expected / largest, rel=1e-5)


def test_diff_rich_output_and_errors(tmp_path: Path, fmc: click.Group) -> None:
    build, a, _ = registered_pair(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    rich = runner.invoke(fmc, ["diff", str(build), a.hash[:6], "writer"])
    assert rich.exit_code == 0, rich.output
    for text in ("settings.lr", "perplexity", "-1.5", "q_proj", "relative"):
        assert text in rich.output
    unknown = runner.invoke(fmc, ["diff", str(build), "writer@9", "writer"])
    assert unknown.exit_code == 1 and "error[FM0849]" in unknown.output
    assert "Traceback" not in unknown.output


def test_diff_without_weights_skips_them(tmp_path: Path, fmc: click.Group) -> None:
    build, a, b = registered_pair(tmp_path)
    args = ["diff", str(build), a.hash, b.hash, "--no-weights", "--format", "json"]
    result = CliRunner().invoke(fmc, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["weights"] is None and document["a"]["ref"] == "writer@1"
