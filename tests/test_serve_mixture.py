"""Several adapters in one request: a row's weighted mixture of adapters, computed in the
same batched pass as plain adapter rows and base rows, equals the offline merge of the same
weights (the base weights plus Σ w · each adapter's merged delta, and peft's
`add_weighted_adapter` with `combination_type="cat"`, the same linear combination), in
logits and in greedy generations through the engine."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from fmlang.backends.serve.adapters import scan_adapter  # noqa: E402
from fmlang.backends.serve.cache import AdapterCache  # noqa: E402
from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.engine import Event, Failed, Finished  # noqa: E402
from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm  # noqa: E402
from fmlang.backends.serve.lora import LoraBank  # noqa: E402
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.sampling import Sampling  # noqa: E402
from fmlang.backends.serve.tickets import Mixture  # noqa: E402

# a0: rank 2 on q/v; a1: rank 8 on q/k/v/o with an alpha pattern; a2: rank 4 on the MLP
# with rsLoRA; a3: rank 16 on all seven projections
RANKS = [2, 8, 4, 16]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("mixture")
    base = build_tiny_causal_lm(root / "base", seed=41)
    return base, build_random_adapters(base, root / "adapters", RANKS, seed=42)


def _merged_mixture(base: Path, adapters: dict[str, Path], parts: dict[str, float]):  # type: ignore[no-untyped-def]
    """The base model with W + Σ_k w_k ΔW_k, each ΔW_k taken from peft's own merge."""
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    mixed = copy.deepcopy(plain)
    weights = dict(mixed.named_parameters())
    originals = {name: p.detach().clone() for name, p in plain.named_parameters()}
    for name, weight in parts.items():
        merged = PeftModel.from_pretrained(copy.deepcopy(plain), str(adapters[name]))
        for key, value in merged.merge_and_unload().named_parameters():
            with torch.no_grad():
                weights[key] += weight * (value - originals[key])
    return mixed


def test_mixture_rows_equal_offline_merge(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    specs = {name: scan_adapter(name, path) for name, path in adapters.items()}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=len(specs))
    cache = AdapterCache(specs, bank, host_slots=len(specs))
    slot = {name: cache.acquire(name) for name in specs}
    mixes = [
        {"a0": 0.7, "a1": 0.3},
        {"a1": -0.5, "a2": 1.25, "a3": 0.4},
        {"a3": 0.5},
    ]
    rows: list[int | tuple[tuple[int, float], ...]] = [
        tuple((slot[n], w) for n, w in mixes[0].items()),
        slot["a2"],
        -1,
        tuple((slot[n], w) for n, w in mixes[1].items()),
        tuple((slot[n], w) for n, w in mixes[2].items()),
        slot["a0"],
    ]
    ids = torch.randint(3, 259, (len(rows), 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), bank.rows(rows):
        batched = model(ids).logits
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    expected = {
        0: _merged_mixture(base, adapters, mixes[0]),
        1: _merged_mixture(base, adapters, {"a2": 1.0}),
        2: plain,
        3: _merged_mixture(base, adapters, mixes[1]),
        4: _merged_mixture(base, adapters, mixes[2]),
        5: _merged_mixture(base, adapters, {"a0": 1.0}),
    }
    for row, reference in expected.items():
        with torch.no_grad():
            alone = reference(ids[row : row + 1]).logits[0]
            unadapted = plain(ids[row : row + 1]).logits[0]
        assert (batched[row] - alone).abs().max().item() < 1e-4, row
        if row != 2:  # the mixture really changes the output
            assert (alone - unadapted).abs().max().item() > 1e-2


def test_mixture_equals_peft_cat_weighted_adapter(tiny: tuple[Path, dict[str, Path]]) -> None:
    """peft's own weighted merge ("cat": ranks concatenated, the exact linear combination
    of the deltas) of two adapters without rsLoRA, against an engine mixture row."""
    base, adapters = tiny
    parts = {"a0": 0.7, "a1": 0.3}
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), str(adapters["a0"]), adapter_name="a0"
    )
    reference.load_adapter(str(adapters["a1"]), adapter_name="a1")
    reference.add_weighted_adapter(list(parts), list(parts.values()), "mix", combination_type="cat")
    reference.set_adapter("mix")
    reference.eval()
    specs = {name: scan_adapter(name, adapters[name]) for name in parts}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    bank = LoraBank(model, specs, slots=2)
    cache = AdapterCache(specs, bank, host_slots=2)
    row = tuple((cache.acquire(name), weight) for name, weight in parts.items())
    ids = torch.randint(3, 259, (3, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), bank.rows([row, row, row]):
        batched = model(ids).logits
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    assert (batched - expected).abs().max().item() < 1e-4


def _run(engine, requests):  # type: ignore[no-untyped-def]
    results: list[Event | None] = [None] * len(requests)
    left = threading.Semaphore(0)

    def sink_for(index: int):  # type: ignore[no-untyped-def]
        def sink(event: Event) -> None:
            if isinstance(event, (Finished, Failed)):
                results[index] = event
                left.release()

        return sink

    for index, (adapter, prompt, new) in enumerate(requests):
        engine.submit_generate(adapter, prompt, Sampling(new), sink_for(index))
    for _ in requests:
        assert left.acquire(timeout=60), "a request never finished"
    return results


def _greedy(model, prompt: list[int], new: int) -> list[int]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=new, do_sample=False, pad_token_id=0
        )
    tokens: list[int] = out[0, len(prompt) :].tolist()
    return tokens[:-1] if tokens and tokens[-1] == 2 else tokens


def test_engine_generates_mixtures_beside_plain_rows(tiny: tuple[Path, dict[str, Path]]) -> None:
    base, adapters = tiny
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=6,
        cache={"device_slots": 3, "host_slots": 4},
    )
    mix = Mixture((("a1", 0.6), ("a3", 0.4)))
    other = Mixture((("a0", -1.0), ("a2", 2.0)))
    requests = [
        (mix, [10, 20, 30], 6),
        ("a1", [11, 12], 5),
        (other, [40, 41, 42, 43], 6),
        (None, [50], 4),
        (mix, [60, 61, 62, 63, 64], 3),
        ("a3", [7, 8, 9], 6),
    ]
    engine = build_engine(config)
    engine.start()
    try:
        results = _run(engine, requests)
        with pytest.raises(ValueError, match="unknown adapter"):
            engine.submit_generate(Mixture((("nope", 1.0),)), [1], Sampling(2), print)
        with pytest.raises(ValueError, match="device slots"):
            everything = Mixture(tuple((name, 0.25) for name in adapters))
            engine.submit_generate(everything, [1], Sampling(2), print)
        with pytest.raises(ValueError, match="distinct"):
            engine.submit_generate(Mixture((("a0", 1.0), ("a0", 1.0))), [1], Sampling(2), print)
    finally:
        engine.stop()
    for (adapter, prompt, new), result in zip(requests, results, strict=True):
        assert isinstance(result, Finished), result
        if isinstance(adapter, Mixture):
            reference = _merged_mixture(base, adapters, dict(adapter.parts))
        else:
            parts = {adapter: 1.0} if adapter else {}
            reference = _merged_mixture(base, adapters, parts)
        assert list(result.token_ids) == _greedy(reference, prompt, new), adapter
    assert all(engine.cache.pinned(name) == 0 for name in adapters)


def test_http_adapters_field(tiny: tuple[Path, dict[str, Path]]) -> None:
    """`adapters` on a completion: the mixture's greedy text; misuse is a 400 naming it;
    the scheduler's and the cache's counters are exported."""
    import asyncio

    from fmlang.backends.serve.fixtures import byte_tokenizer
    from tests.test_serve_server import _error, serving

    base, adapters = tiny
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        cache={"device_slots": 2, "host_slots": 4},
    )
    body = {"model": "base", "prompt": "Hi!", "max_tokens": 6, "temperature": 0}
    parts = {"a0": 0.7, "a3": -0.4}

    async def scenario() -> None:
        async with serving(config) as client:
            answer = await client.post("/v1/completions", json={**body, "adapters": parts})
            assert answer.status_code == 200, answer.text
            bad = [
                ({**body, "model": "a0", "adapters": parts}, "names the base model"),
                ({**body, "adapters": {"zz": 1.0}}, "unknown adapter"),
                ({**body, "adapters": {"a0": 0.0}}, "leave the adapter out"),
                ({**body, "adapters": {"a0": 1.0, "a1": 1.0, "a2": 1.0}}, "device slots"),
                ({**body, "adapters": {}}, "at least 1"),
            ]
            for request, message in bad:
                error = _error(await client.post("/v1/completions", json=request), 400)
                assert error["param"].startswith("adapters") and message in error["message"]
            metrics = (await client.get("/metrics")).text
        tokenizer = byte_tokenizer()
        ids = tokenizer("Hi!")["input_ids"]
        expected = _greedy(_merged_mixture(base, adapters, parts), ids, 6)
        text = tokenizer.decode(expected, skip_special_tokens=True)
        assert answer.json()["choices"][0]["text"] == text
        for name in (
            "fmc_adapter_prefetches_total",
            "fmc_adapter_prefetch_hits_total",
            'fmc_adapter_load_seconds_total{tier="disk"}',
            "fmc_scheduler_passed_over_total",
            "fmc_scheduler_drains_total",
        ):
            assert name in metrics

    asyncio.run(scenario())


def test_openai_client_sends_a_mixture(tiny: tuple[Path, dict[str, Path]]) -> None:
    """The official client sends `adapters` with `extra_body`; chat answers with the mix."""
    openai = pytest.importorskip("openai")
    from fmlang.backends.serve.fixtures import byte_tokenizer
    from fmlang.backends.serve.protocol import ChatMessage, render_chat
    from fmlang.backends.serve.server import serve_in_background

    base, adapters = tiny
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        cache={"device_slots": 2, "host_slots": 4},
    )
    parts = {"a1": 0.5, "a2": 0.5}
    running = serve_in_background(config, build_engine(config))
    try:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            temperature=0,
            extra_body={"adapters": parts},
        )
        with pytest.raises(openai.BadRequestError, match="adapters"):
            client.completions.create(
                model="a1", prompt="x", max_tokens=2, extra_body={"adapters": parts}
            )
    finally:
        running.stop()
    tokenizer = byte_tokenizer()
    prompt = render_chat([ChatMessage(role="user", content="hello")])
    expected = _greedy(_merged_mixture(base, adapters, parts), tokenizer(prompt)["input_ids"], 5)
    assert answer.choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)
