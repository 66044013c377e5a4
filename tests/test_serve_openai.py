"""The server driven by the official `openai` client, as a user of vLLM would drive it: every
request field the server implements, checked for its meaning (the text cut before a stop
string, log-probabilities equal to the model's own, penalties following OpenAI's formula,
seeded choices reproducible, usage equal to the tokenizer's counts), and the refusals of
fields it does not implement, each a 400 naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from fmlang.backends.serve.config import ServeConfig  # noqa: E402
from fmlang.backends.serve.fixtures import (  # noqa: E402
    build_random_adapters,
    build_tiny_causal_lm,
    byte_tokenizer,
)
from fmlang.backends.serve.runtime import build_engine  # noqa: E402
from fmlang.backends.serve.server import BackgroundServer, serve_in_background  # noqa: E402
from fmlang.errors import StageError  # noqa: E402
from tests.test_serve_engine import _reference  # noqa: E402
from tests.test_serve_server import serving  # noqa: E402

EOS = 2  # the tiny model's end-of-sequence id
LETTERS = "abcdefgh "
CONTEXT = 64  # the deployment's max_context_tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("openai")
    base = build_tiny_causal_lm(root / "base", seed=31)
    return base, build_random_adapters(base, root / "adapters", [4, 8], seed=32)


@pytest.fixture(scope="module")
def server(tiny: tuple[Path, dict[str, Path]]) -> Iterator[BackgroundServer]:
    base, adapters = tiny
    config = ServeConfig(
        base_model=str(base),
        adapters={name: str(path) for name, path in adapters.items()},
        max_batch=8,
        max_choices=8,
        max_context_tokens=CONTEXT,
        max_new_tokens=8,
        max_new_tokens_limit=48,
        max_top_logprobs=5,
    )
    running = serve_in_background(config, build_engine(config))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def merged(tiny: tuple[Path, dict[str, Path]]) -> dict[str, torch.nn.Module]:
    base, adapters = tiny
    return {"base": _reference(base, None), "a1": _reference(base, adapters["a1"])}


TOKENIZER = byte_tokenizer()


def ids(text: str) -> list[int]:
    return list(TOKENIZER(text)["input_ids"])


def letters_bias() -> dict[str, int]:
    """+100 on a few ASCII tokens: the tiny random model then writes readable text, which
    the byte tokenizer maps back to token ids losslessly."""
    return {str(ids(letter)[0]): 100 for letter in LETTERS}


@torch.no_grad()
def reference(
    model: torch.nn.Module,
    prompt: list[int],
    steps: int,
    bias: dict[str, int] | None = None,
    presence: float = 0.0,
    frequency: float = 0.0,
) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding computed directly from the model with OpenAI's penalty formula:
    the tokens, and at each step log_softmax of the model's raw logits."""
    tokens: list[int] = []
    logprobs: list[torch.Tensor] = []
    for _ in range(steps):
        logits = model(torch.tensor([prompt + tokens])).logits[0, -1].float()
        logprobs.append(torch.log_softmax(logits, -1))
        counts = torch.bincount(torch.tensor(tokens, dtype=torch.long), minlength=len(logits))
        adjusted = logits - counts * frequency - (counts > 0).float() * presence
        for token, value in (bias or {}).items():
            adjusted[int(token)] += value
        token = int(adjusted.argmax())
        if token == EOS:
            break
        tokens.append(token)
    return tokens, logprobs


def bad_request(call: Any, param: str) -> str:
    """The 400 the call gets, which must name `param`; its message."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    error = caught.value
    assert error.status_code == 400
    assert error.param == param, error.body
    return str(error.message)


# ---- /v1/models -----------------------------------------------------------------------


def test_models_lists_the_base_and_every_adapter(client: Any) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["base", "a0", "a1"]
    assert all(m.object == "model" and m.owned_by == "fmc" for m in models)
    assert all(isinstance(m.created, int) and m.created > 0 for m in models)
    extra = [m.model_extra for m in models]
    assert extra[0]["parent"] is None and extra[0]["root"] == "base"
    assert all(e["parent"] == "base" and e["root"] == "base" for e in extra[1:])


# ---- usage, list prompts, n -------------------------------------------------------------


def test_list_prompts_and_n_prompt_major_with_usage(
    client: Any, merged: dict[str, torch.nn.Module]
) -> None:
    prompts = ["Hello", "Goodbye, all"]
    answer = client.completions.create(
        model="a1", prompt=prompts, n=2, max_tokens=5, temperature=0, logit_bias=letters_bias()
    )
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    expected = [
        TOKENIZER.decode(reference(merged["a1"], ids(p), 5, letters_bias())[0]) for p in prompts
    ]
    # choices are prompt-major: 0 and 1 answer the first prompt, 2 and 3 the second
    assert [c.text for c in answer.choices] == [expected[0]] * 2 + [expected[1]] * 2
    assert answer.usage.prompt_tokens == sum(len(ids(p)) for p in prompts)
    assert answer.usage.completion_tokens == sum(len(ids(c.text)) for c in answer.choices) == 20
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 20
    # a list of token-id lists is the same request
    by_ids = client.completions.create(
        model="a1",
        prompt=[ids(p) for p in prompts],
        n=2,
        max_tokens=5,
        temperature=0,
        logit_bias=letters_bias(),
    )
    assert [c.text for c in by_ids.choices] == [c.text for c in answer.choices]
    chat = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.usage.prompt_tokens == len(ids("user: hi\nassistant:"))
    assert chat.usage.completion_tokens <= 3


def test_n_choices_are_distinct_and_seeded(client: Any) -> None:
    def sample(seed: int, n: int = 4) -> list[str]:
        answer = client.completions.create(
            model="a0", prompt="Once", n=n, max_tokens=12, temperature=1.0, seed=seed
        )
        return [c.text for c in answer.choices]

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again  # the same seed gives the same choices
    assert len(set(first)) > 1  # each choice is its own sample
    assert first != other
    assert sample(7, n=1) == first[:1]  # choice i is seeded seed + i whatever n is
    chat = [
        client.chat.completions.create(
            model="a1",
            messages=[{"role": "user", "content": "hi"}],
            n=3,
            max_completion_tokens=10,
            temperature=1.0,
            seed=3,
        )
        for _ in range(2)
    ]
    texts = [[c.message.content for c in answer.choices] for answer in chat]
    assert texts[0] == texts[1] and len(set(texts[0])) > 1
    assert [c.index for c in chat[0].choices] == [0, 1, 2]


# ---- stop --------------------------------------------------------------------------------


def _stop_case(text: str, size: int) -> tuple[str, int]:
    """A stop string of `size` characters from `text` whose first occurrence is not at its
    start, and that occurrence's index."""
    for start in range(3, len(text) - size):
        stop = text[start : start + size]
        if text.find(stop) >= 3:
            return stop, text.find(stop)
    raise AssertionError(f"no stop string in {text!r}")


def test_stop_strings_cut_the_text_streamed_or_not(client: Any) -> None:
    body = {
        "model": "base",
        "prompt": "The",
        "max_tokens": 30,
        "temperature": 1.0,
        "seed": 5,  # sampled (greedy repeats one letter), the same tokens every time
        "logit_bias": letters_bias(),
    }
    full = client.completions.create(**body).choices[0]
    assert full.finish_reason == "length" and len(full.text) == 30
    for size in (1, 2, 3):
        stop, at = _stop_case(full.text, size)
        for stops in (stop, ["zzz", stop]):
            answer = client.completions.create(**body, stop=stops)
            cut = answer.choices[0]
            assert cut.text == full.text[:at] and stop not in cut.text
            assert cut.finish_reason == "stop"
            # usage counts every generated token, up to the one that completed the stop
            assert answer.usage.completion_tokens == at + len(stop)
            chunks = list(client.completions.create(**body, stop=stops, stream=True))
            streamed = "".join(c.choices[0].text for c in chunks)
            assert streamed == full.text[:at]  # nothing of the stop string ever went out
            assert chunks[-1].choices[0].finish_reason == "stop"
    never = client.completions.create(**body, stop=["zz", "qq"]).choices[0]
    assert never.text == full.text and never.finish_reason == "length"
    messages = [{"role": "user", "content": "hi"}]
    chat_body = {"model": "a0", "messages": messages, "max_tokens": 30, "seed": 6}
    chat_full = client.chat.completions.create(**chat_body, logit_bias=letters_bias())
    stop, at = _stop_case(chat_full.choices[0].message.content, 2)
    chat = client.chat.completions.create(**chat_body, logit_bias=letters_bias(), stop=[stop])
    assert chat.choices[0].message.content == chat_full.choices[0].message.content[:at]
    assert chat.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        **chat_body, logit_bias=letters_bias(), stop=[stop], stream=True
    )
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert content == chat.choices[0].message.content


def test_what_a_stream_holds_back() -> None:
    """The end of the text that may still become a stop string is held back; the search
    for a stop restarts where the text changed (an incomplete character's U+FFFD turning
    into the character shortens the text)."""
    from fmlang.backends.serve.engine import _held, _same_start

    assert _held("xab", ("abc",)) == 2 and _held("xabc", ("abcd", "cz")) == 3
    assert _held("xyz", ("abc", "zz")) == 1 and _held("xyz", ("a",)) == 0
    assert _same_start("ab\ufffd\ufffd", "abé") == 2 and _same_start("ab", "abc") == 2


# ---- logprobs ----------------------------------------------------------------------------


def test_completion_logprobs_equal_the_models(
    client: Any, merged: dict[str, torch.nn.Module]
) -> None:
    prompt = "Logs"
    answer = client.completions.create(
        model="a1", prompt=prompt, max_tokens=6, temperature=0, logprobs=3
    )
    tokens, steps = reference(merged["a1"], ids(prompt), 6)
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == len(tokens) > 0
    for token, text in zip(tokens, logprobs.tokens, strict=True):
        alone = TOKENIZER.decode([token])
        if token >= len(TOKENIZER):  # the random model's rows past the tokenizer's 259
            assert text == alone == ""
        elif alone and "\ufffd" not in alone:
            assert text == alone
        else:  # a token holding part of a character shows its byte (`\xe2`)
            assert text.startswith("\\x") and len(text) == 4
    for index, token in enumerate(tokens):
        assert abs(logprobs.token_logprobs[index] - float(steps[index][token])) < 1e-4
        best = steps[index].topk(3)
        assert (
            sorted(logprobs.top_logprobs[index].values(), reverse=True)
            == pytest.approx(best.values.tolist(), abs=1e-4)
            or len(logprobs.top_logprobs[index]) < 3
        )  # byte tokens may share a text
    offsets = [len(TOKENIZER.decode(tokens[:i])) for i in range(len(tokens))]
    assert logprobs.text_offset == offsets
    chunks = list(
        client.completions.create(
            model="a1", prompt=prompt, max_tokens=6, temperature=0, logprobs=3, stream=True
        )
    )
    streamed = [
        lp for c in chunks if c.choices[0].logprobs for lp in c.choices[0].logprobs.token_logprobs
    ]
    assert streamed == pytest.approx(logprobs.token_logprobs, abs=1e-6)


def test_chat_logprobs_equal_the_models(client: Any, merged: dict[str, torch.nn.Module]) -> None:
    answer = client.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "hey"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        logit_bias=letters_bias(),
    )
    prompt = ids("user: hey\nassistant:")
    tokens, steps = reference(merged["base"], prompt, 5, letters_bias())
    content = answer.choices[0].logprobs.content
    assert [entry.token for entry in content] == [TOKENIZER.decode([t]) for t in tokens]
    for entry, token, step in zip(content, tokens, steps, strict=True):
        # raw log-probabilities: before the bias that chose the token
        assert abs(entry.logprob - float(step[token])) < 1e-4
        assert entry.bytes == list(entry.token.encode())
        assert [alt.logprob for alt in entry.top_logprobs] == pytest.approx(
            step.topk(2).values.tolist(), abs=1e-4
        )
    plain = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "hey"}], max_tokens=2
    )
    assert plain.choices[0].logprobs is None
    # sampled without bias, the tiny model writes bytes of all kinds, characters split
    # across tokens: the tokens' bytes put together are the text
    raw = client.chat.completions.create(
        model="a1",
        messages=[{"role": "user", "content": "hey"}],
        max_tokens=40,
        temperature=1.0,
        seed=1,
        logprobs=True,
    ).choices[0]
    joined = b"".join(bytes(entry.bytes) for entry in raw.logprobs.content)
    assert any(byte >= 0x80 for byte in joined)
    assert joined.decode("utf-8", "replace") == raw.message.content


# ---- sampling: top_p, top_k, penalties, logit_bias ---------------------------------------


def test_top_k_and_top_p(client: Any) -> None:
    body = {"model": "a0", "prompt": "Sample", "max_tokens": 10}
    greedy = client.completions.create(**body, temperature=0).choices[0].text
    one = client.completions.create(**body, temperature=1.5, extra_body={"top_k": 1}, seed=1)
    narrow = client.completions.create(**body, temperature=1.5, top_p=1e-9, seed=1).choices[0]
    wide = client.completions.create(**body, temperature=1.5, seed=1).choices[0].text
    assert one.choices[0].text == greedy == narrow.text != wide
    # top_k = 3: every sampled token is among the 3 most likely there (raw logprobs rank
    # tokens as the temperature-scaled distribution does)
    for seed in range(3):
        answer = client.completions.create(
            **body, temperature=2.0, extra_body={"top_k": 3}, seed=seed, logprobs=3
        ).choices[0]
        for token, top in zip(answer.logprobs.tokens, answer.logprobs.top_logprobs, strict=True):
            assert token in top


def test_penalties_follow_openais_formula(client: Any, merged: dict[str, torch.nn.Module]) -> None:
    prompt = "Repeat"
    body = {"model": "base", "prompt": prompt, "max_tokens": 24, "temperature": 0}
    bias = letters_bias()

    def run(**penalties: float) -> list[int]:
        text = client.completions.create(**body, logit_bias=bias, **penalties).choices[0].text
        return ids(text)

    plain = run()
    assert plain == reference(merged["base"], ids(prompt), 24, bias)[0]
    for penalties in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        got = run(**penalties)
        expected = reference(
            merged["base"],
            ids(prompt),
            24,
            bias,
            presence=penalties.get("presence_penalty", 0.0),
            frequency=penalties.get("frequency_penalty", 0.0),
        )[0]
        assert got == expected
        # penalised, the text repeats itself less: more distinct tokens, a lower top count
        assert len(set(got)) >= len(set(plain))
        assert max(map(got.count, got)) <= max(map(plain.count, plain))
        assert got != plain
    # a negative penalty rewards repetition
    rewarded = run(frequency_penalty=-2.0)
    assert len(set(rewarded)) <= len(set(plain))


# ---- streaming usage ---------------------------------------------------------------------


def test_stream_include_usage(client: Any) -> None:
    body = {"model": "a0", "prompt": "Count", "max_tokens": 7, "temperature": 0, "n": 2}
    plain = client.completions.create(**body)
    chunks = list(
        client.completions.create(**body, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    for index in (0, 1):
        text = "".join(c.choices[0].text for c in chunks[:-1] if c.choices[0].index == index)
        assert text == plain.choices[index].text
    chat = list(
        client.chat.completions.create(
            model="a1",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chat[-1].choices == [] and chat[-1].usage.prompt_tokens == len(
        ids("user: x\nassistant:")
    )
    without = list(client.completions.create(**body, stream=True))
    assert all(c.usage is None for c in without) and all(c.choices for c in without)


# ---- limits and refusals -----------------------------------------------------------------


def test_max_tokens_bounded_by_the_context(client: Any) -> None:
    prompt = "x" * 20  # 20 tokens; the context holds 64
    message = bad_request(
        lambda: client.completions.create(model="base", prompt=prompt, max_tokens=45), "max_tokens"
    )
    assert "44" in message and "64" in message
    fits = client.completions.create(model="base", prompt=prompt, max_tokens=44, temperature=0)
    assert fits.usage.prompt_tokens + fits.usage.completion_tokens <= CONTEXT
    message = bad_request(
        lambda: client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": prompt}],
            max_completion_tokens=45,
        ),
        "max_completion_tokens",
    )
    assert str(CONTEXT) in message
    bad_request(
        lambda: client.completions.create(model="base", prompt="x", max_tokens=49), "max_tokens"
    )


def test_unsupported_fields_are_refused_by_name(client: Any) -> None:
    complete = client.completions.create
    chat = client.chat.completions.create
    messages = [{"role": "user", "content": "x"}]
    bad_request(lambda: complete(model="base", prompt="x", extra_body={"frob": 1}), "frob")
    stops = ["a", "b", "c", "d", "e"]
    assert "4" in bad_request(lambda: complete(model="base", prompt="x", stop=stops), "stop")
    bad_request(lambda: complete(model="base", prompt="x", echo=True), "echo")
    bad_request(lambda: complete(model="base", prompt="x", suffix="!"), "suffix")
    bad_request(lambda: complete(model="base", prompt="x", best_of=3), "best_of")
    bad_request(lambda: complete(model="base", prompt="x", n=9), "n")
    bad_request(lambda: complete(model="base", prompt=["x"] * 5, n=2), "n")
    bad_request(lambda: complete(model="base", prompt="x", logprobs=6), "logprobs")
    bad_request(lambda: complete(model="base", prompt="x", logit_bias={"5000": 1}), "logit_bias")
    bad_request(
        lambda: complete(model="base", prompt="x", stream_options={"include_usage": True}),
        "stream_options",
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert "tool" in bad_request(
        lambda: chat(model="base", messages=messages, tools=tools), "tools"
    )
    bad_request(
        lambda: chat(model="base", messages=messages, response_format={"type": "json_object"}),
        "response_format.type",
    )
    bad_request(lambda: chat(model="base", messages=messages, top_logprobs=2), "top_logprobs")
    bad_request(lambda: chat(model="base", messages=messages, store=True), "store")
    bad_request(
        lambda: chat(model="base", messages=[{"role": "user", "content": "x", "name": "me"}]),
        "messages.0.name",
    )
    # what the client sends by default, and the fields accepted as OpenAI defines them
    fine = chat(
        model="base",
        messages=[{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        max_tokens=2,
        user="someone",
        response_format={"type": "text"},
    )
    assert fine.usage.prompt_tokens == len(ids("user: x\nassistant:"))
    assert complete(model="base", prompt="x", max_tokens=2, best_of=1, echo=False).choices
    # the client sends null for a parameter given as None: the default, as OpenAI's schema says
    nulls = {"temperature": None, "top_p": None, "n": None, "stop": None, "seed": None}
    assert len(complete(model="base", prompt="x", max_tokens=2, **nulls).choices) == 1


# ---- classification ----------------------------------------------------------------------


def test_classify_refuses_a_base_without_a_trained_head(tmp_path: Path) -> None:
    """An encoder checkpoint without a classification head gets a randomly initialised one
    at load: its answers mean nothing, so only adapters that carry the trained head
    (peft `modules_to_save`) classify; the bare base is refused."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    encoder = tmp_path / "encoder"
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=300,
    )  # fmt: skip
    BertModel(config).save_pretrained(encoder)
    byte_tokenizer().save_pretrained(encoder)
    adapters = _headed_adapters(encoder, tmp_path)
    served = ServeConfig(
        base_model=str(encoder),
        task="classify",
        classes=("ham", "spam", "eggs"),
        adapters={k: str(v) for k, v in adapters.items()},
    )

    async def scenario() -> tuple[Any, Any]:
        async with serving(served) as http:
            base = await http.post("/v1/classify", json={"model": "base", "input": "x"})
            own = await http.post("/v1/classify", json={"model": "h0", "input": "x"})
            return base, own

    base, own = asyncio.run(scenario())
    assert base.status_code == 400, base.text
    error = base.json()["error"]
    assert error["param"] == "model" and error["code"] == "untrained_head"
    assert "h0" in error["message"]
    assert own.status_code == 200 and len(own.json()["data"]) == 1
    # refused at startup: an adapter without the head, and a deployment with no adapter
    lacking = {**served.adapters, "bare": str(_headless_adapter(encoder, tmp_path))}
    for adapters, code in ((lacking, "FM1060"), ({}, "FM1061")):
        with pytest.raises(StageError) as caught:
            build_engine(served.model_copy(update={"adapters": adapters}))
        assert caught.value.diagnostics[0].code == code


def _headless_adapter(encoder: Path, root: Path) -> Path:
    """LoRA on the classifier without `task_type`: peft saves no head with it."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(encoder, num_labels=3)
    lora = LoraConfig(r=2, target_modules=["query"])
    get_peft_model(model, lora).save_pretrained(str(root / "bare"))
    return root / "bare"


def _headed_adapters(encoder: Path, root: Path) -> dict[str, Path]:
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    torch.manual_seed(9)
    model = BertForSequenceClassification.from_pretrained(encoder, num_labels=3)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query"])
    get_peft_model(model, lora).save_pretrained(str(root / "h0"))
    return {"h0": root / "h0"}
