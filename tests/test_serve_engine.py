"""The serving engine's correctness: batched multi-LoRA rows equal each adapter merged into
the base model and run alone (logits and greedy generations), continuous batching with
admission mid-flight, sampling, classification across adapters, and startup errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, TaskType, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, BertConfig, BertForSequenceClassification  # noqa: E402

from fmlang.backends.serve.adapters import scan_adapter  # noqa: E402
from fmlang.backends.serve.config import ServeConfig, load_config  # noqa: E402
from fmlang.backends.serve.engine import Classified, Engine, Event, Failed, Finished  # noqa: E402
from fmlang.backends.serve.fixtures import (  # noqa: E402
    build_random_adapters,
    build_tiny_causal_lm,
    byte_tokenizer,
)
from fmlang.backends.serve.lora import LoraBank  # noqa: E402
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.sampling import Sampling  # noqa: E402
from fmlang.errors import StageError  # noqa: E402

RANKS = [2, 8, 4, 16]  # four adapters, four ranks, four target sets


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("serve")
    base = build_tiny_causal_lm(root / "base", seed=1)
    return base, build_random_adapters(base, root / "adapters", RANKS, seed=2)


def _reference(base: Path, adapter: Path | None) -> torch.nn.Module:
    """The adapter merged into a fresh copy of the base model (peft merge_and_unload)."""
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is None:
        return model
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()


def _config(tiny: tuple[Path, dict[str, Path]], **extra: object) -> ServeConfig:
    base, adapters = tiny
    return ServeConfig.model_validate(
        {
            "base_model": str(base),
            "adapters": {name: str(path) for name, path in adapters.items()},
            **extra,
        }
    )


def run_all(engine: Engine, requests: list[tuple[str | None, list[int], Sampling]]) -> list[Event]:
    """Submit every request at once and wait for each one's last event."""
    results: list[Event | None] = [None] * len(requests)
    left = threading.Semaphore(0)

    def sink_for(index: int):  # type: ignore[no-untyped-def]
        def sink(event: Event) -> None:
            if isinstance(event, (Finished, Failed, Classified)):
                results[index] = event
                left.release()

        return sink

    for index, (adapter, prompt, sampling) in enumerate(requests):
        engine.submit_generate(adapter, prompt, sampling, sink_for(index))
    for _ in requests:
        assert left.acquire(timeout=60), "a request never finished"
    return [r for r in results if r is not None]


def test_mixed_batch_logits_equal_merged_adapters(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    specs = {name: scan_adapter(name, path) for name, path in adapters.items()}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=len(specs))
    from fmlang.backends.serve.cache import AdapterCache

    cache = AdapterCache(specs, bank, host_slots=len(specs))
    rows = ["a0", None, "a1", "a2", "a3", None, "a1", "a0"]
    ids = torch.randint(3, 259, (len(rows), 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), bank.rows([cache.acquire(name) for name in rows]):
        batched = model(ids).logits
    for name in [None, *adapters]:
        reference = _reference(base, adapters[name] if name else None)
        plain = _reference(base, None)
        for row in [i for i, r in enumerate(rows) if r == name]:
            with torch.no_grad():
                alone = reference(ids[row : row + 1]).logits[0]
                unadapted = plain(ids[row : row + 1]).logits[0]
            assert (batched[row] - alone).abs().max().item() < 1e-4
            if name is not None:  # the adapter really changes the output
                assert (alone - unadapted).abs().max().item() > 1e-2


def _greedy_reference(model: torch.nn.Module, prompt: list[int], new: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=new, do_sample=False, pad_token_id=0
        )
    tokens: list[int] = out[0, len(prompt) :].tolist()
    return tokens[:-1] if tokens and tokens[-1] == 2 else tokens


def _mixed_requests(count: int, seed: int) -> list[tuple[str | None, list[int], Sampling]]:
    generator = torch.Generator().manual_seed(seed)
    names: list[str | None] = [None, "a0", "a1", "a2", "a3"]
    requests = []
    for index in range(count):
        length = int(torch.randint(1, 14, (1,), generator=generator))
        prompt = torch.randint(3, 259, (length,), generator=generator).tolist()
        requests.append((names[index % 5], prompt, Sampling(max_new_tokens=3 + index % 9)))
    return requests


def test_continuous_batching_greedy_equals_merged_generate(
    tiny: tuple[Path, dict[str, Path]],
) -> None:
    """More requests than rows and more adapters than device slots: rows join and leave the
    running batch mid-flight and adapters are evicted, yet every answer is the merged one."""
    base, adapters = tiny
    engine = build_engine(_config(tiny, max_batch=4, cache={"device_slots": 3, "host_slots": 2}))
    seen: list[int] = []
    engine.on_batch = seen.append
    engine.start()
    try:
        requests = _mixed_requests(15, seed=3)
        results = run_all(engine, requests)
    finally:
        engine.stop()
    merged = {
        name: _reference(base, adapters[name] if name else None) for name in [None, *adapters]
    }
    for (adapter, prompt, sampling), result in zip(requests, results, strict=True):
        assert isinstance(result, Finished), result
        expected = _greedy_reference(merged[adapter], prompt, sampling.max_new_tokens)
        assert list(result.token_ids) == expected
        assert result.reason == ("length" if len(expected) == sampling.max_new_tokens else "stop")
    stats = engine.cache.stats()
    assert stats["device"].evictions > 0 and stats["host"].evictions > 0
    assert 1 < max(seen) <= 4
    assert engine.cache.pinned("a0") == 0 and engine.running() == 0


def test_sampling_seeded_and_top_p(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = build_engine(_config(tiny, max_batch=8))
    engine.start()
    prompt = [10, 20, 30, 40]
    try:
        hot = [("a1", prompt, Sampling(12, temperature=1.5, seed=s)) for s in (7, 7, 8)]
        nucleus = ("a1", prompt, Sampling(12, temperature=1.5, top_p=1e-6, seed=9))
        greedy = ("a1", prompt, Sampling(12))
        first, again, other, narrow, plain = run_all(engine, [*hot, nucleus, greedy])
    finally:
        engine.stop()
    assert isinstance(first, Finished) and isinstance(again, Finished)
    assert isinstance(other, Finished) and isinstance(narrow, Finished)
    assert isinstance(plain, Finished)
    assert first.token_ids == again.token_ids  # same seed, same tokens
    assert first.token_ids != other.token_ids  # another seed, another sample
    assert narrow.token_ids == plain.token_ids  # top-p that keeps one token is greedy


def test_streamed_text_adds_up(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = build_engine(_config(tiny))
    engine.start()
    events: list[Event] = []
    done = threading.Event()

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, (Finished, Failed)):
            done.set()

    try:
        engine.submit_generate("a2", [72, 105], Sampling(20), sink, stream=True)
        assert done.wait(30)
    finally:
        engine.stop()
    final = events[-1]
    assert isinstance(final, Finished)
    streamed = "".join(getattr(e, "text", "") for e in events[:-1]) + final.tail
    assert streamed == final.text


def _classifier_adapters(root: Path) -> tuple[Path, dict[str, Path]]:
    torch.manual_seed(5)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=300,
        num_labels=3,
    )
    BertForSequenceClassification(config).save_pretrained(root / "base")
    byte_tokenizer().save_pretrained(root / "base")
    folders = {}
    for index, (rank, targets) in enumerate(
        [(2, ["query"]), (4, ["query", "value"]), (8, ["key"])]
    ):
        torch.manual_seed(50 + index)
        model = BertForSequenceClassification.from_pretrained(root / "base")
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=rank, target_modules=targets, init_lora_weights=False
        )
        get_peft_model(model, lora).save_pretrained(str(root / f"c{index}"))
        folders[f"c{index}"] = root / f"c{index}"
    return root / "base", folders


def test_classification_rows_across_adapters(tmp_path: Path) -> None:
    base, adapters = _classifier_adapters(tmp_path)
    config = ServeConfig(
        base_model=str(base),
        task="classify",
        classes=("ham", "spam", "eggs"),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=8,
    )
    engine = build_engine(config)
    texts = ["check out my channel", "nice song", "subscribe!!", "first"]
    results: list[Event] = []
    done = threading.Semaphore(0)

    def sink(event: Event) -> None:
        results.append(event)
        done.release()

    names: list[str | None] = ["c0", None, "c1", "c2"]
    for name in names:  # queued before the engine starts: one batch of 8 rows
        engine.submit_classify(name, texts[:2] if name == "c1" else texts, sink)
    engine.start()
    try:
        for _ in names:
            assert done.acquire(timeout=30)
    finally:
        engine.stop()
    tokenizer = byte_tokenizer()
    by_order = dict(zip(names, results, strict=True))
    for name, result in by_order.items():
        assert isinstance(result, Classified)
        model = BertForSequenceClassification.from_pretrained(base).eval()
        if name:
            model = PeftModel.from_pretrained(model, str(adapters[name])).merge_and_unload()
        batch = texts[:2] if name == "c1" else texts
        for text, row in zip(batch, result.probabilities, strict=True):
            with torch.no_grad():
                logits = model(**tokenizer([text], return_tensors="pt")).logits
            expected = torch.softmax(logits, -1)[0]
            assert (torch.tensor(row) - expected).abs().max().item() < 1e-4


def test_unsupported_and_mismatched_adapters(
    tiny: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    base, adapters = tiny
    dora = tmp_path / "dora"
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(
        model, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)
    ).save_pretrained(str(dora))
    with pytest.raises(StageError) as raised:
        scan_adapter("dora", dora)
    assert raised.value.diagnostics[0].code == "FM1004"
    with pytest.raises(StageError) as raised:
        scan_adapter("gone", tmp_path / "missing")
    assert raised.value.diagnostics[0].code == "FM1003"
    spec = scan_adapter("a0", adapters["a0"])
    other = torch.nn.Sequential()  # a "base model" without the adapter's layers
    with pytest.raises(StageError) as raised:
        LoraBank(other, {"a0": spec}, slots=1)
    assert raised.value.diagnostics[0].code == "FM1005"


def test_config_and_model_errors(tiny: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    base, _ = tiny
    with pytest.raises(StageError) as raised:
        load_config(tmp_path / "absent.json")
    assert raised.value.diagnostics[0].code == "FM1001"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base_model": "x", "max_batch": 0}), encoding="utf-8")
    with pytest.raises(StageError) as raised:
        load_config(bad)
    assert raised.value.diagnostics[0].code == "FM1002"
    assert "max_batch" in raised.value.diagnostics[0].message
    good = tmp_path / "server.json"
    good.write_text(json.dumps({"base_model": "model", "adapters": {"x": "ad/x"}}), "utf-8")
    assert load_config(good).adapters["x"] == str((tmp_path / "ad" / "x").resolve())
    built = tmp_path / "build" / "deploy" / "chat" / "server.json"
    built.parent.mkdir(parents=True)
    weights = {"kind": "hub", "location": "org/model", "revision": "abc"}
    build_json = {"schema_version": "1", "model": "m", "base": {"name": "b", "weights": weights},
                  "task": "generate", "adapters": {"m": "run/models/m/adapter"},
                  "max_adapters": 3, "max_batch": 4, "max_new_tokens": 64}  # fmt: skip
    built.write_text(json.dumps(build_json), "utf-8")
    mapped = load_config(built)
    assert (mapped.base_model, mapped.revision, mapped.model_name) == ("org/model", "abc", "b")
    assert mapped.adapters == {"m": str((tmp_path / "build/run/models/m/adapter").resolve())}
    assert mapped.cache.device_slots == 3 and mapped.max_batch == 4
    with pytest.raises(StageError) as raised:
        build_engine(ServeConfig(base_model=str(tmp_path / "no-model")))
    assert raised.value.diagnostics[0].code == "FM1006"
    # A checkpoint without a classification head gets one sized to the classes, at random:
    # with no adapter carrying the trained head, nothing can classify ...
    three = ServeConfig(base_model=str(base), task="classify", classes=("a", "b", "c"))
    with pytest.raises(StageError) as raised:
        build_engine(three)
    assert raised.value.diagnostics[0].code == "FM1061"
    # ... and one with a trained head keeps it: 2 outputs cannot serve 3 classes.
    from transformers import AutoModelForSequenceClassification

    headed = tmp_path / "headed"
    AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=2).save_pretrained(
        headed
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            (headed / name).write_bytes((base / name).read_bytes())
    with pytest.raises(StageError) as raised:
        build_engine(three.model_copy(update={"base_model": str(headed)}))
    assert raised.value.diagnostics[0].code == "FM1008"  # the head has 2 outputs, not 3
    bare = tmp_path / "bare"
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(bare)  # no tokenizer beside it
    with pytest.raises(StageError) as raised:
        build_engine(ServeConfig(base_model=str(bare)))
    assert raised.value.diagnostics[0].code == "FM1007"
