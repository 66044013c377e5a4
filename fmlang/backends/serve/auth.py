"""Who may query a served deployment: bearer API keys mapped to principals, checked against
the principals the deployment grants `query`, every decision in the audit log.

**Keys.** A request authenticates with `Authorization: Bearer KEY` (what OpenAI clients
send). Keys come from a key file (`--api-keys FILE`, else FMC_API_KEYS_FILE) and from
FMC_API_KEY_<NAME> variables, never from the spec or server.json. Each line of the file (and
each variable's value) is `PRINCIPAL KEY` or `PRINCIPAL sha256:HEX`, HEX being the sha256 of
the key's UTF-8 bytes (`printf %s KEY | sha256sum`), so the file need not hold the keys
themselves; blank lines and `#` comments are skipped. A plaintext key has at least 16
characters, and a file holding plaintext keys must not be readable by other users (a file
of digests may be). `python -m fmlang.backends.serve.auth PRINCIPAL` prints a new key and
its line.

**Lookup.** The server keeps only the keys' sha256 digests. A presented key is hashed once
and compared with every stored digest by `hmac.compare_digest`, all of them whichever
matches, so the time taken does not depend on which key (if any) matched.

**Decisions** (`AuthGuard`, an ASGI middleware, before the body is read): no or malformed
credentials → 401 (`invalid_api_key`, FM1077), an unknown key → 401 (FM1078), a key whose
principal the deployment does not grant `query` → 403 (`permission_denied`, FM1079); each
with `WWW-Authenticate: Bearer` on a 401 and OpenAI's error shape. /health, /ready and
/metrics stay open for probes and scrapers (their figures name no adapter, principal or
key); every other path, /v1/models and the OpenAPI document included, needs a granted key.
The grant is per deployment (`query:<deploy>`), so a granted principal may query every
model the deployment serves and /v1/models lists all of them; anyone else gets 403.

**Audit.** Every decision is appended to the audit log (audit_writer.py) with the principal
(never the key), endpoint, model, decision, reason and client address. A refusal is
queued without waiting. An allowed request's entry is submitted once its body names the
model (`admit`, called by the server as it parses the body; at the response for requests
without one) and its response is held until the entry is on disk: the model works while
the entry is written, and no answer leaves without its record (503 when the log cannot
take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fmlang.backends.serve.audit_writer import AuditUnavailable, AuditWriter
from fmlang.backends.serve.protocol import ApiError
from fmlang.diagnostics import Diagnostic, error
from fmlang.errors import StageError

KEYS_FILE_ENV = "FMC_API_KEYS_FILE"
KEY_ENV_PREFIX = "FMC_API_KEY_"
DIGEST_PREFIX = "sha256:"
MIN_KEY_CHARS = 16
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
ESTABLISHED = "api-key"  # how a serving principal is established, in its audit entries
_DIGEST = re.compile(r"[0-9a-f]{64}")
_STATE = "fmc_admission"  # the request scope's state key for the allowed request's record


# ---- the key table -------------------------------------------------------------------


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeyTable:
    """(sha256 of a key, its principal) for every key; the keys themselves are not kept."""

    entries: tuple[tuple[bytes, str], ...] = field(repr=False)

    def principal(self, key: str) -> str | None:
        """The principal of `key`, or None; every digest is compared, in constant time."""
        presented = digest(key)
        found: str | None = None
        for stored, principal in self.entries:
            matched = hmac.compare_digest(stored, presented)
            found = principal if matched else found
        return found

    @property
    def principals(self) -> frozenset[str]:
        return frozenset(principal for _, principal in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def load_keys(path: Path | None, environ: Mapping[str, str] = os.environ) -> KeyTable:
    """The keys in `path` (else the file FMC_API_KEYS_FILE names, when set) and in the
    FMC_API_KEY_<NAME> variables. Raises StageError: FM1071 (the file cannot be read),
    FM1072 (an invalid entry, a duplicate key, plaintext keys readable by others)."""
    entries: list[tuple[bytes, str, str]] = []  # digest, principal, where
    named = path or (Path(environ[KEYS_FILE_ENV]) if environ.get(KEYS_FILE_ENV) else None)
    if named is not None:
        text, mode = _read_key_file(named)
        parsed = list(_parse(text.splitlines(), str(named)))
        if mode & 0o004 and any(plain for *_, plain in parsed):
            raise StageError(
                _invalid(
                    f"the API key file `{named}` holds plaintext keys and can be read by "
                    f"every user (mode {mode:o})",
                    f"chmod 600 {named}, or store the keys as `PRINCIPAL sha256:HEX`",
                )
            )
        entries += [(d, p, where) for d, p, where, _ in parsed]
    for name in sorted(environ):
        if name.startswith(KEY_ENV_PREFIX):
            entries += [(d, p, w) for d, p, w, _ in _parse([environ[name]], f"${name}")]
    seen: dict[bytes, str] = {}
    for key_digest, _, where in entries:
        if key_digest in seen:
            raise StageError(
                _invalid(
                    f"{where} holds the same key as {seen[key_digest]}",
                    "give every principal a key of its own",
                )
            )
        seen[key_digest] = where
    return KeyTable(tuple((d, p) for d, p, _ in entries))


def _read_key_file(path: Path) -> tuple[str, int]:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        return path.read_text(encoding="utf-8"), mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StageError(
            error(
                "FM1071",
                f"cannot read the API key file `{path}`: {reason}",
                help=f"point --api-keys (or {KEYS_FILE_ENV}) at a file of `PRINCIPAL KEY` lines",
            )
        ) from None


def _parse(lines: Iterable[str], source: str) -> Iterable[tuple[bytes, str, str, bool]]:
    """(digest, principal, where, plaintext) for each entry; where names the line, never
    the key."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}" if not source.startswith("$") else source
        parts = line.split()
        if len(parts) != 2:
            raise StageError(
                _invalid(
                    f"{where} is not `PRINCIPAL KEY` (two fields separated by spaces)",
                    "write one `PRINCIPAL KEY` or `PRINCIPAL sha256:HEX` per line, e.g. "
                    "`team:ml sha256:…`",
                )
            )
        principal, key = parts
        if key.startswith(DIGEST_PREFIX):
            hexdigest = key[len(DIGEST_PREFIX) :].lower()
            if not _DIGEST.fullmatch(hexdigest):
                raise StageError(
                    _invalid(
                        f"{where}: the digest of `{principal}`'s key is not 64 hex digits",
                        "write `sha256:` and the output of `printf %s KEY | sha256sum`",
                    )
                )
            yield bytes.fromhex(hexdigest), principal, where, False
        elif len(key) < MIN_KEY_CHARS:
            raise StageError(
                _invalid(
                    f"{where}: `{principal}`'s key is {len(key)} characters long; a key needs "
                    f"at least {MIN_KEY_CHARS}",
                    "issue a long random key: `python -m fmlang.backends.serve.auth PRINCIPAL`",
                )
            )
        else:
            yield digest(key), principal, where, True


def _invalid(message: str, help: str) -> Diagnostic:
    return error("FM1072", message, help=help)


# ---- requests ------------------------------------------------------------------------


def bearer(scope: Scope) -> str | None:
    """The bearer credential of a request: exactly one Authorization header, `Bearer KEY`."""
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) != 1:
        return None
    header: str = values[0].decode("latin-1")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        return None
    return credential


@dataclass(frozen=True)
class Refusal:
    """A refused request: the response, and the code its audit entry gives as reason."""

    error: ApiError
    code: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.error.message}"


@dataclass
class Gate:
    """Who may query `deploy`: `allowed` principals, holding one of `keys`; decisions go to
    `writer`."""

    deploy: str
    allowed: frozenset[str]
    keys: KeyTable
    writer: AuditWriter

    def decide(self, scope: Scope) -> tuple[str | None, Refusal | None]:
        """(principal, refusal) for a request; refusal is None when it may proceed."""
        key = bearer(scope)
        if key is None:
            return None, _unauthenticated(
                "FM1077",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        principal = self.keys.principal(key)
        if principal is None:
            return None, _unauthenticated(
                "FM1078", "Incorrect API key provided. Use a key this server was given."
            )
        if principal not in self.allowed:
            message = (
                f"`{principal}` may not query the deployment `{self.deploy}`: it is not "
                "granted `query`"
            )
            return principal, Refusal(ApiError(403, message, code="permission_denied"), "FM1079")
        return principal, None

    def entry(self, scope: Scope, principal: str | None, decision: str, model: str | None,
              reason: str | None) -> dict[str, Any]:  # fmt: skip
        client = scope.get("client")
        record: dict[str, Any] = {
            "event": "serve",
            "action": "query",
            "stage": f"query:{self.deploy}",
            "principal": principal,
            "established": ESTABLISHED if principal is not None else None,
            "endpoint": scope.get("path"),
            "method": scope.get("method"),
            "model": model,
            "decision": decision,
            "client": client[0] if client else None,
        }
        if reason is not None:
            record["reason"] = reason
        return record


def _unauthenticated(code: str, message: str) -> Refusal:
    headers = {"WWW-Authenticate": 'Bearer realm="fmc"'}
    return Refusal(ApiError(401, message, code="invalid_api_key", headers=headers), code)


@dataclass
class _Admission:
    """An allowed request: its entry, once submitted (`written`), and whether its response
    was replaced by a 503 because the entry could not be written."""

    gate: Gate
    scope: Scope
    principal: str
    written: asyncio.Future[None] | None = None
    replaced: bool = False

    def begin(self, model: str | None) -> None:
        """Submit the allowed entry naming `model` (once); 503 when the log cannot take it."""
        if self.written is not None:
            return
        entry = self.gate.entry(self.scope, self.principal, "allowed", model, None)
        try:
            self.written = self.gate.writer.submit(entry)
        except AuditUnavailable as exc:
            raise _audit_refusal(exc) from None

    async def settled(self) -> None:
        """Wait until the entry is on disk (submitting it, without a model, if the request
        named none); 503 when it cannot be written."""
        self.begin(None)
        assert self.written is not None
        try:
            await asyncio.shield(self.written)
        except AuditUnavailable as exc:
            raise _audit_refusal(exc) from None


def _audit_refusal(exc: AuditUnavailable) -> ApiError:
    return ApiError(503, str(exc), "service_unavailable", code="audit_unavailable")


async def admit(request: Request, model: str | None) -> None:
    """Record the allowed request's decision, naming `model`: the entry is submitted now
    (503 when the log cannot take it) and the response waits until it is on disk; a no-op
    on a server without a gate."""
    admission = request.scope.get("state", {}).get(_STATE)
    if isinstance(admission, _Admission):
        admission.begin(model)


class AuthGuard:
    """ASGI middleware: every request but the open paths needs a granted principal's key."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        principal, refusal = gate.decide(scope)
        if refusal is not None:
            response = refusal.error
            try:
                gate.writer.record(gate.entry(scope, principal, "denied", None, refusal.reason))
            except AuditUnavailable as exc:
                response = _audit_refusal(exc)
            await response.response()(scope, receive, send)
            return
        assert principal is not None
        admission = _Admission(gate, scope, principal)
        scope.setdefault("state", {})[_STATE] = admission

        async def send_recorded(message: Message) -> None:
            """Hold the response until the request's entry is on disk; 503 instead when
            it cannot be written."""
            if admission.replaced:
                return
            if message["type"] == "http.response.start":
                try:
                    await admission.settled()
                except ApiError as unavailable:
                    admission.replaced = True
                    await unavailable.response()(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        finally:
            if admission.written is None:  # no response at all (the client left)
                with contextlib.suppress(AuditUnavailable):
                    gate.writer.record(gate.entry(scope, principal, "allowed", None, None))
            elif admission.written.done() and not admission.written.cancelled():
                admission.written.exception()  # retrieved: a failure was answered with 503


# ---- issuing keys --------------------------------------------------------------------


def new_key() -> str:
    return "fmc-" + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    """`python -m fmlang.backends.serve.auth PRINCIPAL`: a new random key for PRINCIPAL, and
    the key file line holding only its digest."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fmlang.backends.serve.auth")
    parser.add_argument("principal", help='the principal, as grants name it ("team:ml")')
    args = parser.parse_args(argv)
    key = new_key()
    print(f"key (give it to {args.principal}; it is not stored): {key}")
    print(f"key file line: {args.principal} {DIGEST_PREFIX}{digest(key).hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
