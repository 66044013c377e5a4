"""The HTTP server: OpenAI-style completions and chat completions (optionally streamed as
server-sent events), classification, model listing, health, readiness and Prometheus
metrics. Every failure is a JSON error for that request only; the server never dies
from a request. Torch work stays on the engine thread, off the event loop."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.engine import (
    Classified,
    Engine,
    Event,
    Failed,
    Finished,
    QueueFull,
    Ticket,
    Token,
)
from fmlang.backends.serve.metrics import ServeMetrics
from fmlang.backends.serve.protocol import ApiError
from fmlang.backends.serve.runtime import build_engine
from fmlang.backends.serve.sampling import Sampling
from fmlang.errors import StageError

MAX_CLASSIFY_INPUTS = 256  # per request; split into batches of max_batch rows

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class _State:
    config: ServeConfig
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    engine: Engine | None = None
    load_error: str | None = None

    def ready_engine(self) -> Engine:
        if self.engine is None:
            reason = self.load_error or "the base model is still loading"
            raise ApiError(503, reason, "service_unavailable", code="not_ready")
        return self.engine

    def adapter(self, model: str) -> str | None:
        """The adapter a request's `model` names (None: the base model), else 404."""
        if model == self.config.model_name:
            return None
        if model in self.config.adapters:
            return model
        known = ", ".join([self.config.model_name, *sorted(self.config.adapters)])
        raise ApiError(
            404,
            f"the model `{model}` does not exist; known models: {known}",
            code="model_not_found",
            param="model",
        )

    def attach(self, engine: Engine) -> None:
        engine.on_batch = self.metrics.batch_rows.observe
        self.metrics.watch(engine.cache.stats, engine.queue_depth, engine.running)
        engine.start()
        self.engine = engine


def _load_in_background(state: _State) -> threading.Thread:
    def load() -> None:
        try:
            state.attach(build_engine(state.config))
        except StageError as exc:
            state.load_error = f"cannot load the model: {exc}"

    thread = threading.Thread(target=load, name="fmc-serve-load", daemon=True)
    thread.start()
    return thread


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` bytes (before parsing)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body exceeds {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _guard(state: _State, name: str, handler: Handler) -> Handler:
    """Errors become JSON responses; latency and status are recorded."""

    async def guarded(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = JSONResponse(exc.body(), exc.status, headers=exc.headers)
        except Exception as exc:  # one request's failure, never the server's
            body = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
            response = JSONResponse(body.body(), 500)
        if not isinstance(response, StreamingResponse):
            state.metrics.record(name, response.status_code, time.perf_counter() - start)
        return response

    return guarded


# ---- generation ----------------------------------------------------------------------


@dataclass
class _Job:
    ticket: Ticket
    events: asyncio.Queue[Event]
    deadline: float
    model: str
    started: float = field(default_factory=time.perf_counter)

    async def next(self) -> Event:
        remaining = self.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.events.get(), timeout=max(remaining, 0.0))
        except TimeoutError as exc:
            self.ticket.cancel()
            raise ApiError(504, "the request timed out", "timeout", code="timeout") from exc

    async def final(self) -> Finished | Classified:
        while True:
            event = await self.next()
            if isinstance(event, Failed):
                raise ApiError(500, event.message, "server_error")
            if not isinstance(event, Token):
                return event


def _queue_full(exc: QueueFull) -> ApiError:
    retry = str(max(1, math.ceil(exc.retry_after)))
    return ApiError(
        429, str(exc), "rate_limit_exceeded", code="queue_full", headers={"Retry-After": retry}
    )


def _submit(state: _State, model: str, start: Callable[[Callable[[Event], None]], Ticket]) -> _Job:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def sink(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    try:
        ticket = start(sink)
    except QueueFull as exc:
        raise _queue_full(exc) from exc
    return _Job(ticket, events, time.monotonic() + state.config.request_timeout_s, model)


def _sampling(state: _State, body: wire._Sampled, limit: int | None, prompt_len: int) -> Sampling:
    config, engine = state.config, state.ready_engine()
    if prompt_len == 0:
        raise ApiError(400, "the prompt is empty", param="prompt")
    if prompt_len > config.max_input_tokens:
        raise ApiError(
            400,
            f"the prompt has {prompt_len} tokens; the limit is {config.max_input_tokens}",
            code="context_length_exceeded",
            param="prompt",
        )
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


def _encode(engine: Engine, text: str, *, special: bool = True) -> list[int]:
    ids = engine.tokenizer(text, add_special_tokens=special)["input_ids"]
    return [int(i) for i in ids]


def _completion_ids(engine: Engine, body: wire.CompletionRequest) -> list[int]:
    if isinstance(body.prompt, str):
        return _encode(engine, body.prompt)
    vocab = len(engine.tokenizer)
    if any(not 0 <= token < vocab for token in body.prompt):
        raise ApiError(400, f"prompt token ids must lie in [0, {vocab})", param="prompt")
    return list(body.prompt)


def _chat_ids(engine: Engine, body: wire.ChatRequest) -> list[int]:
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        return _encode(engine, wire.render_chat(body.messages))
    messages = [message.model_dump() for message in body.messages]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # the template rejects these messages
        message = f"the chat template rejects the messages: {exc}"
        raise ApiError(400, message, param="messages") from exc
    return _encode(engine, str(text), special=False)


def _start_generation(
    state: _State, body: wire._Sampled, ids: list[int], limit: int | None
) -> _Job:
    engine = state.ready_engine()
    adapter = state.adapter(body.model)
    sampling = _sampling(state, body, limit, len(ids))

    def start(sink: Callable[[Event], None]) -> Ticket:
        return engine.submit_generate(adapter, ids, sampling, sink, stream=body.stream)

    return _submit(state, body.model, start)


def _finished(state: _State, job: _Job, event: Finished) -> None:
    state.metrics.tokens.inc(len(event.token_ids))
    state.metrics.ttft.observe(event.first_token_s)


def _stream(
    state: _State, name: str, job: _Job, chunk: Callable[[str | None, str | None], dict[str, Any]]
) -> StreamingResponse:
    """Server-sent events: `chunk(text, finish)` per piece, then `data: [DONE]`."""

    async def events() -> AsyncIterator[bytes]:
        status = 200
        try:
            if first := chunk(None, None):
                yield wire.sse(first)
            while True:
                event = await job.next()
                if isinstance(event, Token) and event.text:
                    yield wire.sse(chunk(event.text, None))
                elif isinstance(event, Finished):
                    _finished(state, job, event)
                    if event.tail:
                        yield wire.sse(chunk(event.tail, None))
                    yield wire.sse(chunk("", event.reason))
                    break
                elif isinstance(event, Failed):
                    raise ApiError(500, event.message, "server_error")
        except ApiError as exc:
            status = exc.status
            yield wire.sse(exc.body())
        finally:
            job.ticket.cancel()  # a no-op once finished; frees the row if the client left
            state.metrics.record(name, status, time.perf_counter() - job.started)
        yield wire.sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


async def _completions(state: _State, request: Request) -> Response:
    body = wire.parse(
        wire.CompletionRequest, await _read_body(request, state.config.max_body_bytes)
    )
    engine = _generating(state)
    job = _start_generation(state, body, _completion_ids(engine, body), body.max_tokens)
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            if text is None:
                return {}
            return wire.completion_chunk(ident, created, body.model, text, finish)

        return _stream(state, "completions", job, chunk)
    event = await job.final()
    assert isinstance(event, Finished)
    _finished(state, job, event)
    choice = {"index": 0, "text": event.text, "logprobs": None, "finish_reason": event.reason}
    return JSONResponse(
        {
            **wire.completion_chunk(ident, created, body.model, event.text, event.reason),
            "choices": [choice],
            "usage": wire.usage(event.prompt_tokens, len(event.token_ids)),
        }
    )


async def _chat(state: _State, request: Request) -> Response:
    body = wire.parse(wire.ChatRequest, await _read_body(request, state.config.max_body_bytes))
    engine = _generating(state)
    limit = body.max_completion_tokens or body.max_tokens
    job = _start_generation(state, body, _chat_ids(engine, body), limit)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            delta = {"role": "assistant", "content": ""} if text is None else {"content": text}
            if finish:
                delta = {}
            return wire.chat_chunk(ident, created, body.model, delta, finish)

        return _stream(state, "chat", job, chunk)
    event = await job.final()
    assert isinstance(event, Finished)
    _finished(state, job, event)
    message = {"role": "assistant", "content": event.text}
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "message": message, "finish_reason": event.reason}],
            "usage": wire.usage(event.prompt_tokens, len(event.token_ids)),
        }
    )


def _generating(state: _State) -> Engine:
    engine = state.ready_engine()
    if state.config.task != "generate":
        raise ApiError(400, "this server classifies; use POST /v1/classify", code="wrong_task")
    return engine


async def _classify(state: _State, request: Request) -> Response:
    config = state.config
    body = wire.parse(wire.ClassifyRequest, await _read_body(request, config.max_body_bytes))
    engine = state.ready_engine()
    if config.task != "classify":
        raise ApiError(400, "this server generates; use POST /v1/completions", code="wrong_task")
    adapter = state.adapter(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not 1 <= len(texts) <= MAX_CLASSIFY_INPUTS:
        raise ApiError(400, f"give 1 to {MAX_CLASSIFY_INPUTS} inputs", param="input")
    for index, text in enumerate(texts):
        if len(_encode(engine, text)) > config.max_input_tokens:
            raise ApiError(
                400,
                f"input {index} has more than {config.max_input_tokens} tokens (the limit)",
                code="context_length_exceeded",
                param="input",
            )
    # More inputs than one forward pass holds go as several batches, in order.
    step = config.max_batch
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
    jobs = [
        _submit(state, body.model, partial(engine.submit_classify, adapter, chunk))
        for chunk in chunks
    ]
    rows: list[Sequence[float]] = []
    for job in jobs:
        event = await job.final()
        assert isinstance(event, Classified)
        rows.extend(event.probabilities)
    data = [
        {
            "index": index,
            "label": config.classes[max(range(len(row)), key=row.__getitem__)],
            "probabilities": dict(zip(config.classes, row, strict=True)),
        }
        for index, row in enumerate(rows)
    ]
    return JSONResponse({"object": "list", "model": body.model, "data": data})


# ---- the app ---------------------------------------------------------------------------


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The server for `config`. Given no engine, the model loads in the background once the
    app starts (`/ready` answers 503 until then); the engine stops when the app stops."""
    state = _State(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = _load_in_background(state) if engine is None else None
        if engine is not None:
            state.attach(engine)
        try:
            yield
        finally:
            if loader is not None:
                await asyncio.to_thread(loader.join)
            if state.engine is not None:
                await asyncio.to_thread(state.engine.stop)

    app = FastAPI(title="fmc serve", lifespan=lifespan)
    app.state.serve = state
    routes: dict[str, Callable[[_State, Request], Awaitable[Response]]] = {
        "/v1/completions": _completions,
        "/v1/chat/completions": _chat,
        "/v1/classify": _classify,
    }
    for path, handler in routes.items():
        name = path.rsplit("/", 1)[-1]
        bound = _guard(state, name, _bind(state, handler))
        app.add_api_route(path, bound, methods=["POST"], include_in_schema=False)
    _add_info_routes(app, state)
    return app


def _bind(state: _State, handler: Callable[[_State, Request], Awaitable[Response]]) -> Handler:
    async def bound(request: Request) -> Response:
        return await handler(state, request)

    return bound


def _add_info_routes(app: FastAPI, state: _State) -> None:
    config = state.config

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        base = {"id": config.model_name, "object": "model", "owned_by": "fmc", "parent": None}
        adapters = [
            {"id": name, "object": "model", "owned_by": "fmc", "parent": config.model_name}
            for name in sorted(config.adapters)
        ]
        return {"object": "list", "data": [base, *adapters]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        if state.engine is None:
            reason = state.load_error or "loading"
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def run(config: ServeConfig) -> None:
    """Load the model (StageError if it cannot be), then serve until interrupted."""
    import uvicorn

    engine = build_engine(config)
    uvicorn.run(create_app(config, engine), host=config.host, port=config.port, log_level="info")


@dataclass
class BackgroundServer:
    """A real uvicorn server on a loopback port, in a thread (tests and benchmarks)."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_background(config: ServeConfig, engine: Engine | None = None) -> BackgroundServer:
    """Start the app on `config.host` at a free port; returns once it accepts connections."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, 0))
    port = sock.getsockname()[1]
    app = create_app(config, engine)
    settings = uvicorn.Config(app, log_level="warning", access_log=False, backlog=2048)
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the server did not start")
    return BackgroundServer(f"http://{config.host}:{port}", server, thread)
