"""What the server checks before a handler sees a request: the Host header (a server bound
to loopback answers only to its own names, so a web page cannot reach it through DNS
rebinding), the content type (`application/json` only, so a browser form or a `text/plain`
fetch cannot post to it), and the body's size and arrival time, enforced while it is read.
Each refusal is an OpenAI-style error naming the header or the body."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from fmlang.backends.serve.config import ServeConfig
from fmlang.backends.serve.protocol import ApiError
from fmlang.verify.exposure import is_loopback

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(config: ServeConfig) -> frozenset[str] | None:
    """The Host names the server answers to, or None (any) when it is bound to a public
    address and no `allowed_hosts` are configured."""
    names = {name.lower().strip("[]") for name in config.allowed_hosts}
    if not names and not is_loopback(config.host):
        return None
    return frozenset(names | LOOPBACK_NAMES | {config.host.lower().strip("[]")})


def host_name(value: str) -> str:
    """`example.com:8080` → `example.com`, `[::1]:8080` → `::1` (lowercase)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name if not rest or rest.startswith(":") else value
    name, _, _ = value.partition(":") if value.count(":") == 1 else (value, "", "")
    return name


class HostGuard:
    """ASGI middleware: requests whose Host header names none of `allowed` get 400."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value for key, value in scope["headers"] if key == b"host"]
            if len(hosts) != 1 or host_name(hosts[0].decode("latin-1")) not in self.allowed:
                shown = ", ".join(sorted(self.allowed))
                error = ApiError(
                    400,
                    f"the Host header must name this server ({shown}); add other names to "
                    "the server's allowed_hosts",
                    code="invalid_host",
                    param="Host",
                )
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def require_json(request: Request) -> None:
    """415 unless the body is declared `application/json` (any charset parameter)."""
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            f"the Content-Type must be application/json, not `{declared or 'none'}`",
            code="unsupported_media_type",
            param="Content-Type",
        )


async def read_body(request: Request, config: ServeConfig) -> bytes:
    """The body, refused with 413 as soon as it exceeds `max_body_bytes` (before parsing)
    and with 408 when it has not all arrived within `body_timeout_s`."""
    limit = config.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    try:
        return await asyncio.wait_for(_collect(request, limit), config.body_timeout_s)
    except asyncio.TimeoutError as exc:
        message = f"the request body did not arrive within {config.body_timeout_s:g} s"
        raise ApiError(408, message, code="body_timeout", headers=_CLOSE) from exc


async def _collect(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_CLOSE = {"Connection": "close"}  # the rest of the body is never read: drop the connection


def _too_large(limit: int) -> ApiError:
    message = f"the request body exceeds {limit} bytes"
    return ApiError(413, message, code="body_too_large", headers=_CLOSE)
