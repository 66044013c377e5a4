"""The OpenAI-style wire format: request bodies, error bodies and response chunks.

Errors are `{"error": {"message", "type", "code", "param"}}` as OpenAI writes them. Every
request field is typed strictly (no `true` for a token id, no `"1"` for a number) and
bounded, so a body either validates into values the engine can run or is refused with a
400 naming the field; nothing is clamped. Nothing is ignored either: a field this server
does not implement (an OpenAI one such as `tools`, or a typo) is a 400 naming it. The
bounds here are the wire format's own; the deployment's limits (`ServeConfig`: choices,
stop strings, log-probabilities, tokens) are checked in `prompts`. Chat messages use the
tokenizer's chat template when it has one, otherwise this template: one line
`<role>: <content>` per message, then `assistant:` for the reply."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails
from starlette.responses import JSONResponse

from fmlang.backends.serve.tickets import TokenLogprob

Body = TypeVar("Body", bound=BaseModel)

MIN_TEMPERATURE = 0.01  # below it (but above 0) logits / temperature overflow float32
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, as OpenAI's schema says
MAX_TOKENS_FIELD = 2**31 - 1  # the server's own limit (max_new_tokens_limit) is lower
MAX_CLASSIFY_INPUTS = 256  # per request; split into batches of max_batch rows
MAX_CHOICES_FIELD = 128  # n and the number of prompts; the server's max_choices is lower
MAX_STOP_FIELD = 16  # stop strings; the server's max_stop is lower (OpenAI's is 4)
MAX_STOP_CHARS = 256  # characters of one stop string
MAX_TOP_LOGPROBS = 20  # alternatives per token (OpenAI's bound); the server's may be lower
MAX_LOGIT_BIAS = 300  # entries of logit_bias
PENALTY = 2.0  # presence and frequency penalties lie in [-2, 2], as OpenAI's do
BIAS = 100.0  # a logit bias lies in [-100, 100]
MAX_MIXTURE = 16  # adapters in one `adapters` mixture; the device slots bound it further
MIXTURE_WEIGHT = 16.0  # a mixture weight lies in [-16, 16] and is not 0

# OpenAI request fields this server does not implement, with what to do instead.
UNSUPPORTED = {
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "the served models do not reason",
    "service_tier": "there is one service tier",
    "store": "completions are not stored",
    "metadata": "completions are not stored, so they take no metadata",
    "web_search_options": "web search is not supported",
}


class ApiError(Exception):
    """An error response: status, OpenAI error type, code, the offending parameter."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.headers = code, param, headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        """The JSON response (ASCII-escaped, so any text in the message renders)."""
        return AsciiJSONResponse(self.body(), self.status, headers=self.headers)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: a lone surrogate cannot break rendering."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains a lone UTF-16 surrogate at character {exc.start}; send text as "
            "valid UTF-8 (or as paired \\ud8xx\\udcxx escapes)"
        ) from None
    return value


def _whole(value: Any) -> Any:
    """`3.0` as 3 (JSON Schema's integers include it); `true` stays a boolean and fails."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Integers: the bounds come before the validator, so that the JSON schema shows them.
_WHOLE = BeforeValidator(_whole)
TokenId = Annotated[int, Field(ge=0), _WHOLE]
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS_FIELD), _WHOLE]
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1]), _WHOLE]
Text = Annotated[str, AfterValidator(_text)]


def _temperature(value: float) -> float:
    if 0.0 < value < MIN_TEMPERATURE:
        raise ValueError(f"give 0 (greedy) or a temperature of at least {MIN_TEMPERATURE}")
    return value


def _bias_key(value: str) -> str:
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise ValueError(f"`{value}` is not a token id (a whole number written as a string)")
    return value


Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES_FIELD), _WHOLE]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS), _WHOLE]
StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS), AfterValidator(_text)]
Penalty = Annotated[float, Field(ge=-PENALTY, le=PENALTY, allow_inf_nan=False)]
BiasKey = Annotated[str, AfterValidator(_bias_key)]
Bias = Annotated[float, Field(ge=-BIAS, le=BIAS, allow_inf_nan=False)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = Field(
        default=False, description="end the stream with a chunk carrying the request's usage"
    )


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # an unknown field is a 400

    model: Text
    user: Text | None = Field(
        default=None, description="the end user's id (OpenAI's field; accepted, not used)"
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """`"temperature": null` is the default, as in OpenAI's schema (the `openai` client
        sends null for a parameter given as None); an unknown field is still refused."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in cls.model_fields}
        return data


def _nonzero(value: float) -> float:
    if value == 0.0:
        raise ValueError("a mixture weight of 0 adds nothing; leave the adapter out")
    return value


MixtureWeight = Annotated[
    float,
    Field(ge=-MIXTURE_WEIGHT, le=MIXTURE_WEIGHT, allow_inf_nan=False),
    AfterValidator(_nonzero),
]


class _Sampled(_Request):
    max_tokens: TokenCount | None = None
    temperature: Annotated[float, AfterValidator(_temperature)] = Field(
        default=1.0, ge=0.0, le=2.0, allow_inf_nan=False
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: Annotated[int, Field(ge=-1, le=MAX_TOKENS_FIELD), _WHOLE] = Field(
        default=0, description="sample among the k most likely tokens (0 or -1: all), as vLLM"
    )
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Choices = Field(default=1, description="choices per prompt, each its own sequence")
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_FIELD)] | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: Annotated[dict[BiasKey, Bias], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    adapters: (
        Annotated[dict[Text, MixtureWeight], Field(min_length=1, max_length=MAX_MIXTURE)] | None
    ) = Field(
        default=None,
        description="fmc extension: a weighted mixture of adapters (name → weight) for this "
        "request, with `model` naming the base model",
    )

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


def _no_echo(value: bool) -> bool:
    if value:
        raise ValueError("echo is not supported; prepend the prompt to the text yourself")
    return value


def _no_suffix(value: str | None) -> str | None:
    if value:
        raise ValueError("suffix (insertion) is not supported")
    return value


Prompts = Annotated[list[Text], Field(min_length=1, max_length=MAX_CHOICES_FIELD)]
TokenPrompts = Annotated[list[list[TokenId]], Field(min_length=1, max_length=MAX_CHOICES_FIELD)]


class CompletionRequest(_Sampled):
    prompt: Text | list[TokenId] | Prompts | TokenPrompts
    logprobs: TopLogprobs | None = Field(
        default=None, description="log-probabilities of each token and of its top k"
    )
    echo: Annotated[bool, AfterValidator(_no_echo)] = False
    best_of: Choices | None = Field(default=None, description="only equal to n is supported")
    suffix: Annotated[Text | None, AfterValidator(_no_suffix)] = None

    def prompts(self) -> list[str] | list[list[int]]:
        """The prompts, a single one as a list of one."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(item, int) for item in prompt):  # one prompt of token ids
            return [[item for item in prompt if isinstance(item, int)]]
        if all(isinstance(item, str) for item in prompt):
            return [item for item in prompt if isinstance(item, str)]
        return [item for item in prompt if isinstance(item, list)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | Annotated[list[TextPart], Field(min_length=1)]

    def text(self) -> str:
        """The content; text parts joined by newlines (as vLLM joins them)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"] = Field(description="only plain text (no JSON modes) is supported")


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = Field(
        default=None, description="alternatives per token (needs logprobs: true)"
    )
    response_format: ResponseFormat | None = None


class ClassifyRequest(_Request):
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_CLASSIFY_INPUTS)]


def parse(kind: type[Body], raw: bytes) -> Body:
    """A request body, or ApiError 400 naming what is wrong (the first problem)."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise ApiError(400, "the request body is not valid JSON: it nests too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return kind.model_validate(data)
    except RecursionError as exc:
        raise ApiError(400, "the request body nests too deeply") from exc
    except ValidationError as exc:
        first = _first_problem(exc)
        param = _param(first["loc"])
        text = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            field = str(first["loc"][-1])
            reason = UNSUPPORTED.get(field, "this server does not know the field")
            text = f"`{field}` is not supported: {reason}"
            if len(first["loc"]) == 1:
                raise ApiError(400, text, code="unsupported_field", param=param) from exc
        message = f"{param}: {text}" if param else text
        raise ApiError(400, message, param=param) from exc


def _first_problem(exc: ValidationError) -> ErrorDetails:
    """The first field's most specific error: for `prompt: [true]`, the list branch's
    `prompt.0` (not a valid integer) rather than the string branch's complaint."""
    errors = exc.errors(include_input=False, include_url=False)
    field = errors[0]["loc"][:1]
    return max((e for e in errors if e["loc"][:1] == field), key=lambda e: len(e["loc"]))


def _param(loc: tuple[int | str, ...]) -> str | None:
    """`messages.0.content` for a field; union branch names (`str`, `list[int]`) dropped."""
    parts = [str(part) for part in loc if not _is_branch(part)]
    return ".".join(parts) or None


def _is_branch(part: int | str) -> bool:
    return isinstance(part, str) and (part in ("str", "int") or "[" in part or "-" in part)


def render_chat(messages: list[ChatMessage]) -> str:
    """The fallback chat template (for tokenizers without one)."""
    lines = [f"{message.role}: {message.text()}" for message in messages]
    return "\n".join([*lines, "assistant:"])


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def completion_chunk(
    ident: str,
    created: int,
    model: str,
    text: str,
    finish: str | None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def chat_chunk(
    ident: str,
    created: int,
    model: str,
    delta: dict[str, str],
    finish: str | None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The completions API's `logprobs`: parallel lists, `text_offset` counted in
    characters from the start of the choice's text."""
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [{token: value for token, value, _ in entry.top} for entry in entries],
        "text_offset": [entry.offset for entry in entries],
    }


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The chat API's `logprobs`: one entry per token, with its text's UTF-8 bytes."""
    content = [
        {
            "token": entry.token,
            "logprob": entry.logprob,
            "bytes": list(entry.raw),
            "top_logprobs": [
                {"token": token, "logprob": value, "bytes": list(data)}
                for token, value, data in entry.top
            ],
        }
        for entry in entries
    ]
    return {"content": content, "refusal": None}
