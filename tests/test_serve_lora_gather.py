"""The multi-LoRA layers' kept gathers: a decode pass whose slots and weights are unchanged
reuses the A and B it gathered last time, a slot rewritten with another adapter is never
served from a stale copy, the byte budget bounds what is kept, and the engine thread's
OpenMP pool helper finds torch's libgomp."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from fmlang.backends.serve.adapters import load_adapter_weights, scan_adapter  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.lora import LoraBank  # noqa: E402
from fmlang.backends.serve.openmp import release_idle_pool  # noqa: E402

# a0: rank 8 on q/k/v/o; a1: rank 16 on all seven projections (both touch q/k/v/o)
RANKS = [4, 8, 4, 16]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("gather")
    base = build_tiny_causal_lm(root / "base", seed=5)
    return base, build_random_adapters(base, root / "adapters", RANKS, seed=6)


def _merged(base: Path, adapter: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()


def _kept(bank: LoraBank) -> dict[str, object]:
    return {name: layer._gathered for name, layer in bank.lora.items()}


def test_kept_gathers_are_reused_and_never_stale(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    names = ["a1", "a3"]
    specs = {name: scan_adapter(name, adapters[name]) for name in names}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=1)
    ids = torch.randint(3, 259, (2, 6), generator=torch.Generator().manual_seed(3))
    for name in names:  # the same slot list [0, 0], each time with other weights in it
        bank.write(0, load_adapter_weights(specs[name]))
        with torch.no_grad():
            expected = _merged(base, adapters[name])(ids).logits
        with torch.inference_mode(), bank.rows([0, 0]):
            first = model(ids).logits
        # every layer the adapter targets kept its gather (a1 leaves the MLP alone)
        kept = {key: value for key, value in _kept(bank).items() if value is not None}
        targets = {key for key, layer in bank.lora.items() if layer.present}
        assert set(kept) == targets and targets
        with torch.inference_mode(), bank.rows([0, 0]):
            second = model(ids).logits
        # the second pass gathered nothing: every layer holds the very same copies
        assert all(_kept(bank)[key] is value for key, value in kept.items())
        assert (first - expected).abs().max().item() < 1e-4, name
        assert (second - expected).abs().max().item() < 1e-4, name


def test_rows_of_another_slot_gather_again(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    specs = {name: scan_adapter(name, adapters[name]) for name in ["a1", "a3"]}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=2)
    bank.write(0, load_adapter_weights(specs["a1"]))
    bank.write(1, load_adapter_weights(specs["a3"]))
    ids = torch.randint(3, 259, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        for slot, name in [(0, "a1"), (1, "a3"), (0, "a1")]:
            with bank.rows([slot]):
                got = model(ids).logits
            with torch.no_grad():
                expected = _merged(base, adapters[name])(ids).logits
            assert (got - expected).abs().max().item() < 1e-4, name


def test_gather_budget_bounds_what_is_kept(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    specs = {"a3": scan_adapter("a3", adapters["a3"])}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=1)
    bank.write(0, load_adapter_weights(specs["a3"]))
    layer = next(iter(bank.lora.values()))
    one_layer = (layer.lora_a[0].numel() + layer.lora_b[0].numel()) * 4 * 3  # 3 rows
    bank.index.gather_budget = 2 * one_layer  # room for a few of the 14 layers' copies
    ids = torch.randint(3, 259, (3, 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = _merged(base, adapters["a3"])(ids).logits
    for _ in range(2):
        with torch.inference_mode(), bank.rows([0, 0, 0]):
            got = model(ids).logits
        assert (got - expected).abs().max().item() < 1e-4
        kept = [value for value in _kept(bank).values() if value is not None]
        assert 0 < len(kept) < len(bank.lora)
        assert bank.index.gathered_bytes <= bank.index.gather_budget


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch uses libgomp on Linux")
def test_release_idle_pool_finds_torchs_openmp() -> None:
    torch.ones(1 << 20).add_(1)  # a parallel region: this thread now owns an OpenMP pool
    assert release_idle_pool()
    assert torch.ones(1 << 20).add_(1).sum().item() == 2 * (1 << 20)  # and it works after


def test_small_lora_kernels_run_on_one_thread(
    tiny: tuple[Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode-sized pass runs its LoRA kernels on the calling thread alone (no OpenMP
    worker to wake), a pass past `SERIAL_WORK` on every thread, the thread count is
    restored either way, and the output is the merged model's."""
    from fmlang.backends.serve import lora

    base, adapters = tiny
    spec = scan_adapter("a1", adapters["a1"])
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, {"a1": spec}, slots=1)
    bank.write(0, load_adapter_weights(spec))
    seen: list[int] = []
    bmm = torch.bmm
    monkeypatch.setattr(
        lora.torch, "bmm", lambda *a: (seen.append(torch.get_num_threads()), bmm(*a))[1]
    )
    ids = torch.randint(3, 259, (2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = _merged(base, adapters["a1"])(ids).logits
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for limit, want in ((1 << 30, 1), (1, 2)):
            monkeypatch.setattr(lora, "SERIAL_WORK", limit)
            seen.clear()
            with torch.inference_mode(), bank.rows([0, 0]):
                got = model(ids).logits
            assert seen and set(seen) == {want}
            assert torch.get_num_threads() == 2
            assert torch.allclose(got, expected, atol=1e-4)
    finally:
        torch.set_num_threads(threads)
