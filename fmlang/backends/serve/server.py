"""The HTTP server: OpenAI-style completions and chat completions (optionally streamed as
server-sent events), classification, model listing, health, readiness and Prometheus
metrics. Every failure is a JSON error for that request only; the server never dies
from a request. Torch work stays on the engine thread and tokenizing on a worker thread,
both off the event loop; a prompt too long in bytes is refused before it is tokenized.
Connections, headers and bodies are bounded (`connections`, `guards`)."""

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
from starlette.exceptions import HTTPException

from fmlang.backends.serve import prompts
from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.connections import uvicorn_options
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
from fmlang.backends.serve.guards import HostGuard, allowed_hosts, read_body, require_json
from fmlang.backends.serve.metrics import ServeMetrics
from fmlang.backends.serve.openapi import describe_bodies
from fmlang.backends.serve.protocol import ApiError
from fmlang.backends.serve.runtime import build_engine
from fmlang.errors import StageError

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


async def _body(state: _State, request: Request, kind: type[wire.Body]) -> wire.Body:
    """The request's JSON body as `kind`: declared JSON, bounded in size and time."""
    require_json(request)
    return wire.parse(kind, await read_body(request, state.config))


def _guard(state: _State, name: str, handler: Handler) -> Handler:
    """Errors become JSON responses; latency and status are recorded."""

    async def guarded(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except Exception as exc:  # one request's failure, never the server's
            message = f"internal error: {type(exc).__name__}: {exc}"
            response = ApiError(500, message, "server_error").response()
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


def _start_generation(
    state: _State, body: wire._Sampled, ids: list[int], limit: int | None
) -> _Job:
    engine = state.ready_engine()
    adapter = state.adapter(body.model)
    sampling = prompts.sampling(state.config, engine, body, limit, len(ids))

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
        except Exception as exc:  # the stream ends with an error event, never mid-chunk
            status = 500
            message = f"internal error: {type(exc).__name__}: {exc}"
            yield wire.sse(ApiError(500, message, "server_error").body())
        finally:
            job.ticket.cancel()  # a no-op once finished; frees the row if the client left
            state.metrics.record(name, status, time.perf_counter() - job.started)
        yield wire.sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


async def _completions(state: _State, request: Request) -> Response:
    body = await _body(state, request, wire.CompletionRequest)
    _generating(state, body.model)
    job = _start_generation(
        state,
        body,
        await prompts.completion_ids(state.config, state.ready_engine(), body),
        body.max_tokens,
    )
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
    body = await _body(state, request, wire.ChatRequest)
    _generating(state, body.model)
    limit = body.max_completion_tokens or body.max_tokens
    job = _start_generation(
        state, body, await prompts.chat_ids(state.config, state.ready_engine(), body), limit
    )
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


def _generating(state: _State, model: str) -> Engine:
    """The engine, or 503 while loading, 400 on a classify server, 404 for an unknown
    model: all before any tokenizing."""
    engine = state.ready_engine()
    if state.config.task != "generate":
        raise ApiError(400, "this server classifies; use POST /v1/classify", code="wrong_task")
    state.adapter(model)
    return engine


async def _classify(state: _State, request: Request) -> Response:
    config = state.config
    body = await _body(state, request, wire.ClassifyRequest)
    engine = state.ready_engine()
    if config.task != "classify":
        raise ApiError(400, "this server generates; use POST /v1/completions", code="wrong_task")
    adapter = state.adapter(body.model)
    texts = await prompts.classify_texts(config, engine, body)
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
    for path, (handler, _) in _ROUTES.items():
        name = path.rsplit("/", 1)[-1]
        bound = _guard(state, name, _bind(state, handler))
        app.add_api_route(path, bound, methods=["POST"])
    describe_bodies(app, {path: body for path, (_, body) in _ROUTES.items()})
    _add_info_routes(app, state)
    app.add_exception_handler(HTTPException, _http_error)
    if (hosts := allowed_hosts(config)) is not None:
        app.add_middleware(HostGuard, allowed=hosts)
    return app


_ROUTES: dict[str, tuple[Callable[[_State, Request], Awaitable[Response]], type[Any]]] = {
    "/v1/completions": (_completions, wire.CompletionRequest),
    "/v1/chat/completions": (_chat, wire.ChatRequest),
    "/v1/classify": (_classify, wire.ClassifyRequest),
}


async def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path, wrong method) in OpenAI's error shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    error = ApiError(exc.status_code, str(exc.detail), code="not_found", headers=headers)
    if exc.status_code == 405:
        error.code = "method_not_allowed"
    return error.response()


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
    app = create_app(config, engine)
    options = uvicorn_options(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", **options)


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
    options = uvicorn_options(config)
    settings = uvicorn.Config(app, log_level="warning", access_log=False, backlog=2048, **options)
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the server did not start")
    return BackgroundServer(f"http://{config.host}:{port}", server, thread)
