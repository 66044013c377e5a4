"""The HTTP server: OpenAI-style completions and chat completions (optionally streamed as
server-sent events), classification, model listing, health, readiness and Prometheus
metrics. Every failure is a JSON error for that request only; the server never dies
from a request. Torch work stays in the engine (its own process by default, `remote`; or
a thread) and tokenizing on a worker thread, both off the event loop; a prompt too long in
bytes is refused before it is tokenized.
Connections, headers and bodies are bounded (`connections`, `guards`)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from fmlang.backends.serve import auth, handoff, prompts
from fmlang.backends.serve import protocol as wire
from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.connections import uvicorn_options
from fmlang.backends.serve.engine import (
    Classified,
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
from fmlang.backends.serve.remote import start_engine
from fmlang.backends.serve.sampling import choice_seed
from fmlang.backends.serve.surface import Served
from fmlang.backends.serve.tickets import Mixture, TokenLogprob
from fmlang.errors import StageError

Handler = Callable[[Request], Awaitable[Response]]
ENGINE_DOWN = "the engine has stopped (its process exited); restart the server"


@dataclass
class _State:
    config: ServeConfig
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    engine: Served | None = None
    load_error: str | None = None

    def ready_engine(self) -> Served:
        if self.engine is None:
            reason = self.load_error or "the base model is still loading"
            raise ApiError(503, reason, "service_unavailable", code="not_ready")
        if not self.engine.alive():
            raise ApiError(503, ENGINE_DOWN, "service_unavailable", code="engine_down")
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

    def route(self, body: wire._Sampled) -> str | Mixture | None:
        """The adapter, or the weighted mixture of fmc's `adapters` field, a generation
        runs with; a mixture needs `model` to name the base model."""
        adapter = self.adapter(body.model)
        if body.adapters is None:
            return adapter
        if adapter is not None:
            raise ApiError(
                400,
                f"adapters: with a mixture, `model` names the base model "
                f"`{self.config.model_name}`, not the adapter `{adapter}`",
                param="adapters",
            )
        mixture = Mixture(tuple(body.adapters.items()))
        try:
            self.ready_engine().check_mixture(mixture)
        except ValueError as exc:
            raise ApiError(400, f"adapters: {exc}", param="adapters") from exc
        return mixture

    def attach(self, engine: Served) -> None:
        engine.on_batch = self.metrics.batch_rows.observe
        self.metrics.watch(
            engine.cache_stats,
            engine.queue_depth,
            engine.running,
            engine.cache_activity,
            engine.scheduler_stats,
        )
        engine.start()
        self.engine = engine


def _load_in_background(state: _State) -> threading.Thread:
    def load() -> None:
        try:
            state.attach(start_engine(state.config))
        except StageError as exc:
            state.load_error = f"cannot load the model: {exc}"

    thread = threading.Thread(target=load, name="fmc-serve-load", daemon=True)
    thread.start()
    return thread


async def _body(state: _State, request: Request, kind: type[wire.Body]) -> wire.Body:
    """The request's JSON body as `kind`: declared JSON, bounded in size and time."""
    require_json(request)
    body = wire.parse(kind, await read_body(request, state.config))
    await auth.admit(request, getattr(body, "model", None))  # audited before it is answered
    return body


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
    """One request's tickets (several with `n` or a list of prompts, in choice order) and
    the queue their events arrive on, each tagged with its ticket's index."""

    tickets: list[Ticket]
    events: asyncio.Queue[tuple[int, Event]]
    deadline: float
    model: str
    started: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        for ticket in self.tickets:
            ticket.cancel()

    async def next(self) -> tuple[int, Event]:
        remaining = self.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.events.get(), timeout=max(remaining, 0.0))
        except TimeoutError as exc:
            self.cancel()
            raise ApiError(504, "the request timed out", "timeout", code="timeout") from exc

    async def finals(self) -> list[Finished | Classified]:
        """Every ticket's last event, in ticket order; the first failure fails the request
        (and cancels the rest)."""
        done: dict[int, Finished | Classified] = {}
        try:
            while len(done) < len(self.tickets):
                index, event = await self.next()
                if isinstance(event, Failed):
                    raise ApiError(500, event.message, "server_error")
                if not isinstance(event, Token):
                    done[index] = event
        finally:
            if len(done) < len(self.tickets):
                self.cancel()
        return [done[index] for index in range(len(self.tickets))]


def _queue_full(exc: QueueFull) -> ApiError:
    retry = str(max(1, math.ceil(exc.retry_after)))
    return ApiError(
        429, str(exc), "rate_limit_exceeded", code="queue_full", headers={"Retry-After": retry}
    )


Start = Callable[[Callable[[Event], None]], Ticket]


def _submit(state: _State, model: str, starts: list[Start]) -> _Job:
    """Submit every ticket of one request, or none: when the queue fills part way, those
    already queued are cancelled and the request gets 429."""
    mailbox = handoff.mailbox(asyncio.get_running_loop())  # few wake-ups per engine step
    events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    def sink_for(index: int) -> Callable[[Event], None]:
        def sink(event: Event) -> None:
            mailbox.post(events, (index, event))

        return sink

    tickets: list[Ticket] = []
    try:
        for index, start in enumerate(starts):
            tickets.append(start(sink_for(index)))
    except QueueFull as exc:
        for ticket in tickets:
            ticket.cancel()
        raise _queue_full(exc) from exc
    return _Job(tickets, events, time.monotonic() + state.config.request_timeout_s, model)


def _start_generation(
    state: _State, body: wire._Sampled, prompt_ids: list[list[int]], limit: int | None, name: str
) -> _Job:
    """One ticket per prompt and choice, prompt-major (choice i of prompt p is p·n + i),
    each with its own sampling; with a seed, ticket k is seeded `seed + k`."""
    engine = state.ready_engine()
    adapter = state.route(body)
    n = prompts.choices(state.config, body, len(prompt_ids))
    starts: list[Start] = []
    for ids in prompt_ids:
        sampling = prompts.sampling(state.config, engine, body, limit, len(ids), field=name)
        for _ in range(n):
            own = sampling
            if sampling.seed is not None:
                own = replace(sampling, seed=choice_seed(sampling.seed, len(starts)))
            starts.append(partial(engine.submit_generate, adapter, ids, own, stream=body.stream))
    return _submit(state, body.model, starts)


def _finished(state: _State, job: _Job, event: Finished) -> None:
    state.metrics.tokens.inc(len(event.token_ids))
    state.metrics.ttft.observe(event.first_token_s)


def _usage(prompt_ids: list[list[int]], finals: Sequence[Finished]) -> dict[str, int]:
    """Prompt tokens once per prompt (not per choice); completion tokens of every choice."""
    completion = sum(len(event.token_ids) for event in finals)
    return wire.usage(sum(len(ids) for ids in prompt_ids), completion)


# A streamed piece: (choice index, text, finish reason, the text's token log-probabilities)
Piece = Callable[[int, str, str | None, tuple[TokenLogprob, ...]], dict[str, Any]]


def _stream(
    state: _State,
    name: str,
    job: _Job,
    firsts: list[dict[str, Any]],
    piece: Piece,
    usage: Callable[[list[Finished]], dict[str, Any]] | None,
) -> StreamingResponse:
    """Server-sent events: `firsts`, then `piece(index, text, finish, logprobs)` per
    piece of every choice as it comes, a finish piece per choice, the `usage` chunk when
    asked for, then `data: [DONE]`."""

    async def events() -> AsyncIterator[bytes]:
        status = 200
        done: dict[int, Finished] = {}
        try:
            for first in firsts:
                yield wire.sse(first)
            while len(done) < len(job.tickets):
                index, event = await job.next()
                if isinstance(event, Token) and event.text:
                    yield wire.sse(piece(index, event.text, None, event.logprobs))
                elif isinstance(event, Finished):
                    _finished(state, job, event)
                    done[index] = event
                    if event.tail or event.tail_logprobs:
                        yield wire.sse(piece(index, event.tail, None, event.tail_logprobs))
                    yield wire.sse(piece(index, "", event.reason, ()))
                elif isinstance(event, Failed):
                    raise ApiError(500, event.message, "server_error")
            if usage is not None:
                yield wire.sse(usage([done[index] for index in range(len(job.tickets))]))
        except ApiError as exc:
            status = exc.status
            yield wire.sse(exc.body())
        except Exception as exc:  # the stream ends with an error event, never mid-chunk
            status = 500
            message = f"internal error: {type(exc).__name__}: {exc}"
            yield wire.sse(ApiError(500, message, "server_error").body())
        finally:
            job.cancel()  # a no-op once finished; frees the rows if the client left
            state.metrics.record(name, status, time.perf_counter() - job.started)
        yield wire.sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


def _usage_chunk(
    body: wire._Sampled, base: dict[str, Any], prompt_ids: list[list[int]]
) -> Callable[[list[Finished]], dict[str, Any]] | None:
    """The final chunk `stream_options.include_usage` asks for: no choices, the usage."""
    if body.stream_options is None or not body.stream_options.include_usage:
        return None
    return lambda finals: {**base, "choices": [], "usage": _usage(prompt_ids, finals)}


async def _completions(state: _State, request: Request) -> Response:
    body = await _body(state, request, wire.CompletionRequest)
    _generating(state, body.model)
    prompt_ids = await prompts.completion_ids(state.config, state.ready_engine(), body)
    job = _start_generation(state, body, prompt_ids, body.max_tokens, "max_tokens")
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    wants_logprobs = body.logprobs is not None

    def logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        return wire.completion_logprobs(entries) if wants_logprobs else None

    if body.stream:
        base = {"id": ident, "object": "text_completion", "created": created, "model": body.model}
        usage = _usage_chunk(body, base, prompt_ids)
        extra = {"usage": None} if usage is not None else {}

        def piece(
            index: int, text: str, finish: str | None, entries: tuple[TokenLogprob, ...]
        ) -> dict[str, Any]:
            chunk = wire.completion_chunk(
                ident, created, body.model, text, finish, index, logprobs(entries)
            )
            return {**chunk, **extra}

        return _stream(state, "completions", job, [], piece, usage)
    finals = _generated(state, job, await job.finals())
    choices = [
        {
            "index": index,
            "text": event.text,
            "logprobs": logprobs(event.logprobs),
            "finish_reason": event.reason,
        }
        for index, event in enumerate(finals)
    ]
    return JSONResponse(
        {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": choices,
            "usage": _usage(prompt_ids, finals),
        }
    )


def _generated(state: _State, job: _Job, events: list[Finished | Classified]) -> list[Finished]:
    finals = [event for event in events if isinstance(event, Finished)]
    assert len(finals) == len(events)
    for event in finals:
        _finished(state, job, event)
    return finals


async def _chat(state: _State, request: Request) -> Response:
    body = await _body(state, request, wire.ChatRequest)
    _generating(state, body.model)
    limit, name = body.max_tokens, "max_tokens"
    if body.max_completion_tokens is not None:
        limit, name = body.max_completion_tokens, "max_completion_tokens"
    prompt_ids = [await prompts.chat_ids(state.config, state.ready_engine(), body)]
    job = _start_generation(state, body, prompt_ids, limit, name)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        return wire.chat_logprobs(entries) if body.logprobs else None

    if body.stream:
        base = {"id": ident, "object": "chat.completion.chunk", "created": created}
        usage = _usage_chunk(body, {**base, "model": body.model}, prompt_ids)
        extra = {"usage": None} if usage is not None else {}

        def chunk(
            index: int, delta: dict[str, str], finish: str | None, entries: Any
        ) -> dict[str, Any]:
            out = wire.chat_chunk(ident, created, body.model, delta, finish, index, entries)
            return {**out, **extra}

        def piece(
            index: int, text: str, finish: str | None, entries: tuple[TokenLogprob, ...]
        ) -> dict[str, Any]:
            delta = {} if finish else {"content": text}
            return chunk(index, delta, finish, None if finish else logprobs(entries))

        firsts = [
            chunk(index, {"role": "assistant", "content": ""}, None, None)
            for index in range(len(job.tickets))
        ]
        return _stream(state, "chat", job, firsts, piece, usage)
    finals = _generated(state, job, await job.finals())
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": event.text},
            "logprobs": logprobs(event.logprobs),
            "finish_reason": event.reason,
        }
        for index, event in enumerate(finals)
    ]
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": choices,
            "usage": _usage(prompt_ids, finals),
        }
    )


def _generating(state: _State, model: str) -> Served:
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
    if adapter is None and engine.untrained_heads:
        raise ApiError(
            400,
            f"the base model `{body.model}` has no trained classification head (its "
            f"{', '.join(sorted(engine.untrained_heads))} would be random weights); classify "
            f"with an adapter that carries one: {', '.join(sorted(config.adapters))}",
            code="untrained_head",
            param="model",
        )
    texts = await prompts.classify_texts(config, engine, body)
    # More inputs than one forward pass holds go as several batches, in order.
    step = config.max_batch
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
    starts: list[Start] = [partial(engine.submit_classify, adapter, chunk) for chunk in chunks]
    job = _submit(state, body.model, starts)
    rows: list[Sequence[float]] = []
    for event in await job.finals():
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


def create_app(
    config: ServeConfig, engine: Served | None = None, gate: auth.Gate | None = None
) -> FastAPI:
    """The server for `config`. Given no engine, the model loads in the background once the
    app starts (`/ready` answers 503 until then); the engine stops when the app stops.
    Given a `gate` (auth.py), requests need a granted principal's API key."""
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
    if gate is not None:
        app.add_middleware(auth.AuthGuard, gate=gate)  # inside the Host check
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

    created = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """OpenAI's model list: the base model, then each adapter with the base as its
        `parent` and `root` (no file paths: the list is public to every client)."""

        def entry(name: str, parent: str | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "fmc",
                "root": config.model_name,
                "parent": parent,
            }

        base = entry(config.model_name, None)
        adapters = [entry(name, config.model_name) for name in sorted(config.adapters)]
        return {"object": "list", "data": [base, *adapters]}

    @app.get("/health")
    async def health() -> Response:
        """Liveness: 503 once the engine is gone (its process died), so an orchestrator
        restarts the server."""
        if state.engine is not None and not state.engine.alive():
            return JSONResponse({"status": "down", "reason": ENGINE_DOWN}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        if state.engine is None:
            reason = state.load_error or "loading"
            return JSONResponse({"status": "not ready", "reason": reason}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def run(config: ServeConfig, gate: auth.Gate | None = None) -> None:
    """Load the model (StageError if it cannot be), then serve until interrupted; behind
    `gate` when given (`fmc serve` always gives one unless --no-auth). With
    `engine_process` the engine starts by `multiprocessing`'s spawn, which imports the
    calling script again: call this under `if __name__ == "__main__":`."""
    import uvicorn

    engine = start_engine(config)
    app = create_app(config, engine, gate)
    options = uvicorn_options(config)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="info", **options)
    finally:
        engine.stop()  # already stopped by the app's shutdown, unless uvicorn never started
        if gate is not None:
            gate.writer.close()


@dataclass
class BackgroundServer:
    """A real uvicorn server on a loopback port, in a thread (tests and benchmarks)."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_background(
    config: ServeConfig, engine: Served | None = None, gate: auth.Gate | None = None
) -> BackgroundServer:
    """Start the app on `config.host` at a free port; returns once it accepts connections
    and its model has loaded (or failed to: `/ready` then says why)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, 0))
    port = sock.getsockname()[1]
    app = create_app(config, engine, gate)
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
    state: _State = app.state.serve
    while state.engine is None and state.load_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return BackgroundServer(f"http://{config.host}:{port}", server, thread)
