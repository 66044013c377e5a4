"""From a request body to what the engine runs: prompt token ids and sampling settings,
with every limit checked. Text is measured in UTF-8 bytes first (`max_input_bytes`) and
refused before any tokenizing; tokenizing and chat templates run on a worker thread, so
the event loop keeps answering while a large prompt is read."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.protocol import ApiError
from fmlang.backends.serve.sampling import Sampling
from fmlang.backends.serve.surface import Served


def utf8_size(text: str, limit: int) -> int:
    """`text`'s UTF-8 length, or more than `limit` (without encoding a huge text)."""
    return len(text) if len(text) > limit else len(text.encode("utf-8"))


def fits_bytes(size: int, limit: int, param: str) -> None:
    """400 for text over `limit` UTF-8 bytes: refused before it costs any tokenizing."""
    if size > limit:
        raise ApiError(
            400,
            f"`{param}` has more than {limit} bytes of text (the server's max_input_bytes); "
            "shorten it",
            code="context_length_exceeded",
            param=param,
        )


def context_tokens(config: ServeConfig, engine: Served) -> int:
    """Prompt plus new tokens of one sequence: the deployment's max_context_tokens, never
    more than the model's positions."""
    return min(config.max_context_tokens or engine.max_positions, engine.max_positions)


def sampling(
    config: ServeConfig,
    engine: Served,
    body: wire._Sampled,
    limit: int | None,
    prompt_len: int,
    *,
    field: str = "max_tokens",
) -> Sampling:
    """The request's sampling settings, once its prompt and `limit` (the request's
    `field`, max_tokens or max_completion_tokens) fit every limit. Without a limit, the
    deployment's max_new_tokens, shortened to what the context leaves."""
    if prompt_len == 0:
        raise ApiError(400, "the prompt is empty", param="prompt")
    if prompt_len > config.max_input_tokens:
        raise too_many_tokens(prompt_len, config.max_input_tokens)
    context = context_tokens(config, engine)
    if limit is not None and limit > config.max_new_tokens_limit:
        raise ApiError(
            400,
            f"{field} is {limit}; the limit is {config.max_new_tokens_limit} (the "
            "deployment's max_new_tokens_limit)",
            param=field,
        )
    if limit is not None and prompt_len + limit > context:
        raise ApiError(
            400,
            f"{field} is {limit} but the prompt has {prompt_len} tokens and the context "
            f"holds {context}: {field} may be at most {context - prompt_len}",
            code="context_length_exceeded",
            param=field,
        )
    wanted = limit if limit is not None else min(config.max_new_tokens, context - prompt_len)
    if wanted < 1:
        raise ApiError(
            400,
            f"the prompt has {prompt_len} tokens, which fills the context of {context}",
            code="context_length_exceeded",
            param="prompt",
        )
    return replace(settings(config, engine, body), max_new_tokens=wanted)


def settings(config: ServeConfig, engine: Served, body: wire._Sampled) -> Sampling:
    """Every sampling field but the token budget, within the deployment's limits."""
    stops = body.stops()
    if len(stops) > config.max_stop:
        raise ApiError(
            400,
            f"stop has {len(stops)} strings; the limit is {config.max_stop} (the "
            "deployment's max_stop)",
            param="stop",
        )
    if body.stream_options is not None and not body.stream:
        raise ApiError(
            400, "stream_options is only allowed with stream: true", param="stream_options"
        )
    bias = tuple((int(key), value) for key, value in sorted((body.logit_bias or {}).items()))
    if any(token >= engine.vocab_size for token, _ in bias):
        raise ApiError(
            400, f"logit_bias token ids must lie in [0, {engine.vocab_size})", param="logit_bias"
        )
    top_k = body.top_k if body.top_k > 0 else 0
    return Sampling(
        1,
        body.temperature,
        body.top_p,
        body.seed,
        top_k=top_k,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=bias,
        stop=stops,
        logprobs=_logprobs(config, body),
    )


def _logprobs(config: ServeConfig, body: wire._Sampled) -> int | None:
    """Alternatives per token (None: no log-probabilities), within max_top_logprobs."""
    if isinstance(body, wire.ChatRequest):
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        wanted, field = (body.top_logprobs or 0) if body.logprobs else None, "top_logprobs"
    else:
        wanted, field = getattr(body, "logprobs", None), "logprobs"
    if wanted is not None and wanted > config.max_top_logprobs:
        raise ApiError(
            400,
            f"{field} is {wanted}; the limit is {config.max_top_logprobs} (the deployment's "
            "max_top_logprobs)",
            param=field,
        )
    return wanted


def choices(config: ServeConfig, body: wire._Sampled, prompts: int) -> int:
    """`n`, once prompts × n fits the deployment's max_choices (and its queue, which
    takes a request's sequences all at once) and best_of, if given, equals n."""
    best_of = getattr(body, "best_of", None)
    if best_of is not None and best_of != body.n:
        raise ApiError(400, "best_of other than n is not supported", param="best_of")
    limit, name = min((config.max_choices, "max_choices"), (config.max_queue, "max_queue"))
    if prompts * body.n > limit:
        raise ApiError(
            400,
            f"{prompts} prompt(s) × n = {body.n} asks for {prompts * body.n} sequences; the "
            f"limit is {limit} (the deployment's {name})",
            param="n",
        )
    return body.n


async def completion_ids(
    config: ServeConfig, engine: Served, body: wire.CompletionRequest
) -> list[list[int]]:
    """Each prompt's token ids: text checked for size, then tokenized on a worker thread."""
    prompts = body.prompts()
    if isinstance(prompts[0], str):
        texts = [str(prompt) for prompt in prompts]
        limit = config.input_bytes_limit
        for text in texts:
            fits_bytes(utf8_size(text, limit), limit, "prompt")
        return await asyncio.to_thread(lambda: [engine.encode(text) for text in texts])
    out = []
    for prompt in prompts:
        assert isinstance(prompt, list)
        if len(prompt) > config.max_input_tokens:
            raise too_many_tokens(len(prompt), config.max_input_tokens)
        if any(token >= engine.vocab_size for token in prompt):
            raise ApiError(
                400, f"prompt token ids must lie in [0, {engine.vocab_size})", param="prompt"
            )
        out.append(list(prompt))
    return out


def too_many_tokens(count: int, limit: int) -> ApiError:
    """The 400 for a prompt of `count` tokens against a limit of `limit`."""
    return ApiError(
        400,
        f"the prompt has {count} tokens; the limit is {limit}",
        code="context_length_exceeded",
        param="prompt",
    )


async def chat_ids(config: ServeConfig, engine: Served, body: wire.ChatRequest) -> list[int]:
    """The conversation's token ids: its messages checked for size, then rendered and
    tokenized on a worker thread."""
    limit = config.input_bytes_limit
    fits_bytes(sum(utf8_size(m.text(), limit) for m in body.messages), limit, "messages")
    return await asyncio.to_thread(_chat_template_ids, engine, body.messages)


def _chat_template_ids(engine: Served, messages: list[wire.ChatMessage]) -> list[int]:
    """The conversation rendered and tokenized (on a worker thread)."""
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        return engine.encode(wire.render_chat(messages))
    turns = [{"role": message.role, "content": message.text()} for message in messages]
    try:
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # the template rejects these messages
        message = f"the chat template rejects the messages: {exc}"
        raise ApiError(400, message, param="messages") from exc
    return engine.encode(str(text), special=False)


async def classify_texts(
    config: ServeConfig, engine: Served, body: wire.ClassifyRequest
) -> list[str]:
    """The texts to classify, each within the byte and token limits."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    limit = config.input_bytes_limit
    for text in texts:
        fits_bytes(utf8_size(text, limit), limit, "input")
    counts = await asyncio.to_thread(lambda: [len(engine.encode(text)) for text in texts])
    for index, count in enumerate(counts):
        if count > config.max_input_tokens:
            raise ApiError(
                400,
                f"input {index} has more than {config.max_input_tokens} tokens (the limit)",
                code="context_length_exceeded",
                param="input",
            )
    return texts
