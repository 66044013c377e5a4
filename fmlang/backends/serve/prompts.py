"""From a request body to what the engine runs: prompt token ids and sampling settings,
with every limit checked. Text is measured in UTF-8 bytes first (`max_input_bytes`) and
refused before any tokenizing; tokenizing and chat templates run on a worker thread, so
the event loop keeps answering while a large prompt is read."""

from __future__ import annotations

import asyncio

from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import Engine
from fmlang.backends.serve.protocol import ApiError
from fmlang.backends.serve.sampling import Sampling


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


def sampling(
    config: ServeConfig, engine: Engine, body: wire._Sampled, limit: int | None, prompt_len: int
) -> Sampling:
    """The request's sampling settings, once its prompt and max_tokens fit every limit."""
    if prompt_len == 0:
        raise ApiError(400, "the prompt is empty", param="prompt")
    if prompt_len > config.max_input_tokens:
        raise too_many_tokens(prompt_len, config.max_input_tokens)
    wanted = limit or config.max_new_tokens
    if wanted > config.max_new_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens is {wanted}; the limit is {config.max_new_tokens_limit}",
            param="max_tokens",
        )
    if prompt_len + wanted > engine.max_positions:
        raise ApiError(
            400,
            f"prompt ({prompt_len}) plus max_tokens ({wanted}) exceeds the model's "
            f"{engine.max_positions} positions",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return Sampling(wanted, body.temperature, body.top_p, body.seed)


async def completion_ids(
    config: ServeConfig, engine: Engine, body: wire.CompletionRequest
) -> list[int]:
    """The prompt's token ids: text checked for size, then tokenized on a worker thread."""
    if isinstance(body.prompt, str):
        limit = config.input_bytes_limit
        fits_bytes(utf8_size(body.prompt, limit), limit, "prompt")
        return await asyncio.to_thread(engine.encode, body.prompt)
    if len(body.prompt) > config.max_input_tokens:
        raise too_many_tokens(len(body.prompt), config.max_input_tokens)
    if any(token >= engine.vocab_size for token in body.prompt):
        raise ApiError(
            400, f"prompt token ids must lie in [0, {engine.vocab_size})", param="prompt"
        )
    return list(body.prompt)


def too_many_tokens(count: int, limit: int) -> ApiError:
    """The 400 for a prompt of `count` tokens against a limit of `limit`."""
    return ApiError(
        400,
        f"the prompt has {count} tokens; the limit is {limit}",
        code="context_length_exceeded",
        param="prompt",
    )


async def chat_ids(config: ServeConfig, engine: Engine, body: wire.ChatRequest) -> list[int]:
    """The conversation's token ids: its messages checked for size, then rendered and
    tokenized on a worker thread."""
    limit = config.input_bytes_limit
    fits_bytes(sum(utf8_size(m.content, limit) for m in body.messages), limit, "messages")
    return await asyncio.to_thread(_chat_template_ids, engine, body.messages)


def _chat_template_ids(engine: Engine, messages: list[wire.ChatMessage]) -> list[int]:
    """The conversation rendered and tokenized (on a worker thread)."""
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        return engine.encode(wire.render_chat(messages))
    turns = [message.model_dump() for message in messages]
    try:
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # the template rejects these messages
        message = f"the chat template rejects the messages: {exc}"
        raise ApiError(400, message, param="messages") from exc
    return engine.encode(str(text), special=False)


async def classify_texts(
    config: ServeConfig, engine: Engine, body: wire.ClassifyRequest
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
