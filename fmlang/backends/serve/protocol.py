"""The OpenAI-style wire format: request bodies, error bodies and response chunks.

Errors are `{"error": {"message", "type", "code", "param"}}` as OpenAI writes them. Every
request field is typed strictly (no `true` for a token id, no `"1"` for a number) and
bounded, so a body either validates into values the engine can run or is refused with a
400 naming the field; nothing is clamped. Chat messages use the tokenizer's chat template
when it has one, otherwise this template: one line `<role>: <content>` per message, then
`assistant:` for the reply."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.responses import JSONResponse

Body = TypeVar("Body", bound=BaseModel)

MIN_TEMPERATURE = 0.01  # below it (but above 0) logits / temperature overflow float32
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, as OpenAI's schema says
MAX_TOKENS_FIELD = 2**31 - 1  # the server's own limit (max_new_tokens_limit) is lower
MAX_CLASSIFY_INPUTS = 256  # per request; split into batches of max_batch rows


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
OneChoice = Annotated[int, Field(ge=1, le=1), _WHOLE]
Text = Annotated[str, AfterValidator(_text)]


def _temperature(value: float) -> float:
    if 0.0 < value < MIN_TEMPERATURE:
        raise ValueError(f"give 0 (greedy) or a temperature of at least {MIN_TEMPERATURE}")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # clients send fields we ignore

    model: Text


class _Sampled(_Request):
    max_tokens: TokenCount | None = None
    temperature: Annotated[float, AfterValidator(_temperature)] = Field(
        default=1.0, ge=0.0, le=2.0, allow_inf_nan=False
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: Seed | None = None
    stream: bool = False
    n: OneChoice = Field(default=1, description="one choice per request")
    stop: None = Field(default=None, description="stop sequences are not supported")


class CompletionRequest(_Sampled):
    prompt: Text | list[TokenId]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None


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
    lines = [f"{message.role}: {message.content}" for message in messages]
    return "\n".join([*lines, "assistant:"])


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def completion_chunk(
    ident: str, created: int, model: str, text: str, finish: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def chat_chunk(
    ident: str, created: int, model: str, delta: dict[str, str], finish: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
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
