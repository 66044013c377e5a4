"""Bounded connections for uvicorn: its h11 protocol with a deadline for each request's
headers and room kept for new clients, plus the uvicorn settings that bound the rest.

Uvicorn alone keeps a connection that never sends a request open for ever, and any byte
resets its keep-alive timer, so half-open connections pile up until the process runs out
of file descriptors. Here a connection has `header_timeout_s` from opening (or from its
previous response) to send a complete request head, and when more than `max_connections`
are open the one idle longest (waiting for a request, none in progress) is closed, so idle
sockets can never lock out a client with a request to send. Past `max_connections` busy
connections uvicorn answers 503 (`limit_concurrency`). Headers are at most
MAX_HEADER_BYTES (h11's incomplete-event limit); bodies are bounded by the app while read."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fmlang.backends.serve.config import ServeConfig

MAX_HEADER_BYTES = 16 * 1024


class BoundedH11Protocol(H11Protocol):
    """One connection. Subclassed per server by `protocol_for` with its two bounds."""

    max_connections = 512
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request head arrived
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        self._await_request()  # before the parent handles a pipelined request
        super().on_response_complete()

    def idle(self) -> bool:
        """Waiting for a request head, with no request in progress."""
        in_progress = self.cycle is not None and not self.cycle.response_complete
        closing = self.transport is None or self.transport.is_closing()
        return self.conn.their_state is h11.IDLE and not in_progress and not closing

    def _await_request(self) -> None:
        self._cancel_deadline()
        self.idle_since = self.loop.time()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.idle():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the longest-idle other connection while there are too many."""
        while len(self.connections) > self.max_connections:
            idle = [
                other
                for other in self.connections
                if other is not self and isinstance(other, BoundedH11Protocol) and other.idle()
            ]
            if not idle:
                return  # every other connection is busy: uvicorn answers this one 503
            victim = min(idle, key=lambda other: other.idle_since)
            victim.transport.close()
            self.connections.discard(victim)


def protocol_for(config: ServeConfig) -> type[BoundedH11Protocol]:
    """The protocol class with this server's bounds."""
    bounds = {
        "max_connections": config.max_connections,
        "header_timeout_s": config.header_timeout_s,
    }
    return type("ServeH11Protocol", (BoundedH11Protocol,), bounds)


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` / `uvicorn.run` that bound connections."""
    return {
        "http": protocol_for(config),
        "ws": "none",  # no WebSocket routes: an upgrade request is plain HTTP
        "limit_concurrency": config.max_connections + 1,  # 503 past max busy connections
        "timeout_keep_alive": config.keep_alive_s,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
