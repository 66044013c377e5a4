"""Who runs `fmc run`, and how fmc knows: asserted, the OS account, or a signed token.

- **asserted**: `--as NAME` or FMC_PRINCIPAL=NAME. A string the person running fmc types;
  nothing checks it.
- **os**: `--as os` (or FMC_PRINCIPAL=os) is `user:LOGIN`, LOGIN being the login name of the
  process's real uid in the password database (`pwd`, never $USER). `--as user:LOGIN` naming
  that same account is established the same way. Faking it takes another account's
  credentials (or root).
- **token**: FMC_PRINCIPAL_TOKEN holds `fmc1.PAYLOAD.MAC`: PAYLOAD the base64url of
  `{"exp": UNIX_SECONDS, "sub": PRINCIPAL}`, MAC the base64url HMAC-SHA256 of
  `fmc-principal-token-v1\\0PAYLOAD` under the key in the file FMC_PRINCIPAL_KEY_FILE names
  (compared in constant time). Faking it takes the key; whoever can read the key can issue a
  token for anyone, so it belongs to the issuer and the account that runs fmc, never to the
  principals (`python -m fmlang.backends.data.identity PRINCIPAL --ttl 3600` issues one).

FMC_REQUIRE_VERIFIED_PRINCIPAL=1 (or `fmc run --require-verified`) refuses an asserted
principal. A principal that cannot be established carries the problem instead of raising:
the run's access check denies every stage with it and records each denial in the audit log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fmlang.diagnostics import Diagnostic, error

PRINCIPAL_ENV = "FMC_PRINCIPAL"
TOKEN_ENV = "FMC_PRINCIPAL_TOKEN"
KEY_FILE_ENV = "FMC_PRINCIPAL_KEY_FILE"
REQUIRE_ENV = "FMC_REQUIRE_VERIFIED_PRINCIPAL"
OS_CLAIM = "os"
ASSERTED, OS, TOKEN = "asserted", "os", "token"
TOKEN_PREFIX = "fmc1"
MIN_KEY_BYTES = 16
_MAC_CONTEXT = b"fmc-principal-token-v1\0"


@dataclass(frozen=True)
class Principal:
    """A principal's name, how it was established (asserted, os or token), and why it
    cannot be trusted when it cannot (then every access is denied)."""

    name: str | None
    established: str
    problem: Diagnostic | None = None


def establish(claim: str | None, require_verified: bool = False,
              environ: Mapping[str, str] = os.environ,
              now: float | None = None) -> Principal | None:  # fmt: skip
    """The principal for `claim` (`--as`; FMC_PRINCIPAL when None). None when nobody is
    named at all (access then fails closed with FM0703)."""
    claim = claim or environ.get(PRINCIPAL_ENV) or None
    required = require_verified or environ.get(REQUIRE_ENV, "").lower() in ("1", "true", "yes")
    if claim == OS_CLAIM:
        return os_principal()
    token = environ.get(TOKEN_ENV) or None
    if token is not None:
        return _claimed_by_token(claim, token, environ, time.time() if now is None else now)
    if claim is None:
        return None
    if claim == _os_name():
        return Principal(claim, OS)
    return Principal(claim, ASSERTED, _unverified(claim) if required else None)


def os_principal() -> Principal:
    """`user:LOGIN` for the process's real uid."""
    name = _os_name()
    if name is None:
        problem = _invalid(
            f"the real uid {os.getuid()} has no entry in the password database",
            f"run as an account with a login name, or with a signed token ({TOKEN_ENV})",
        )
        return Principal(None, OS, problem)
    return Principal(name, OS)


def _os_name() -> str | None:
    import pwd

    try:
        return f"user:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:
        return None


def _claimed_by_token(claim: str | None, token: str, environ: Mapping[str, str],
                      now: float) -> Principal:  # fmt: skip
    key, problem = principal_key(environ)
    if key is None:
        return Principal(claim, TOKEN, problem)
    subject, problem = verify_token(token, key, now)
    if problem is None and claim is not None and claim != subject:
        problem = _invalid(
            f"{TOKEN_ENV} is issued to `{subject}`, but the run claims `{claim}`",
            f"drop `--as` (and {PRINCIPAL_ENV}), or use a token issued to `{claim}`",
        )
    return Principal(subject or claim, TOKEN, problem)


def principal_key(
    environ: Mapping[str, str] = os.environ,
) -> tuple[bytes | None, Diagnostic | None]:
    """The token key from the file FMC_PRINCIPAL_KEY_FILE names: at least 16 bytes, and
    readable by its owner alone (anyone who can read it can issue tokens)."""
    name = environ.get(KEY_FILE_ENV)
    if not name:
        return None, _key_problem(f"{TOKEN_ENV} is set but {KEY_FILE_ENV} is not")
    try:
        mode = os.stat(name).st_mode
        secret = Path(name).read_bytes().strip()
    except OSError as exc:
        return None, _key_problem(f"cannot read the key file `{name}`: {exc.strerror or exc}")
    if stat.S_IMODE(mode) & 0o077:
        return None, _key_problem(
            f"the key file `{name}` is open to other users (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {name}",
        )
    if len(secret) < MIN_KEY_BYTES:
        return None, _key_problem(
            f"the key in `{name}` is {len(secret)} bytes long; it needs at least {MIN_KEY_BYTES}"
        )
    return secret, None


def issue_token(principal: str, ttl_seconds: int, key: bytes, now: float | None = None) -> str:
    """A token naming `principal`, valid for `ttl_seconds` from `now`."""
    expires = int((time.time() if now is None else now) + ttl_seconds)
    body = json.dumps({"exp": expires, "sub": principal}, sort_keys=True, separators=(",", ":"))
    payload = _b64(body.encode("utf-8"))
    return f"{TOKEN_PREFIX}.{payload}.{_b64(_mac(key, payload))}"


def verify_token(token: str, key: bytes, now: float) -> tuple[str | None, Diagnostic | None]:
    """The principal a token names, or why it does not verify (the MAC is checked in
    constant time before the payload is read)."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None, _invalid(f"{TOKEN_ENV} is not an fmc principal token (`fmc1.…`)")
    try:
        mac = _unb64(parts[2])
    except (binascii.Error, ValueError):
        return None, _invalid(f"{TOKEN_ENV} has a malformed signature")
    if not hmac.compare_digest(mac, _mac(key, parts[1])):
        return None, _invalid(f"{TOKEN_ENV} is not signed with the key in {KEY_FILE_ENV}")
    try:
        claims = json.loads(_unb64(parts[1]))
    except (binascii.Error, ValueError):
        claims = None
    if not isinstance(claims, dict):
        return None, _invalid(f"{TOKEN_ENV}'s payload is not a JSON object")
    subject, expires = claims.get("sub"), claims.get("exp")
    if not (isinstance(subject, str) and subject and isinstance(expires, int)):
        return None, _invalid(f"{TOKEN_ENV} lacks a principal (`sub`) or an expiry (`exp`)")
    if expires <= now:
        return subject, _invalid(f"the token for `{subject}` expired at {_utc(expires)}")
    return subject, None


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _MAC_CONTEXT + payload.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _invalid(message: str, help: str | None = None) -> Diagnostic:
    return error("FM0731", message, help=help or f"get a fresh token from its issuer, or unset "
                 f"{TOKEN_ENV} and run as your OS account (`--as os`)")  # fmt: skip


def _key_problem(message: str, help: str | None = None) -> Diagnostic:
    return error("FM0732", message, help=help or f"point {KEY_FILE_ENV} at the file holding "
                 "the key the token was issued with (at least 16 bytes, mode 600)")  # fmt: skip


def _unverified(claim: str) -> Diagnostic:
    return error(
        "FM0733",
        f"`{claim}` is only asserted, and verified principals are required",
        help=f"run as your OS account (`--as os`, granted as `user:LOGIN`) or with a signed "
        f"token in {TOKEN_ENV}; {REQUIRE_ENV} or `--require-verified` asks for this",
    )


def main(argv: list[str] | None = None) -> int:
    """Issue a token: `python -m fmlang.backends.data.identity PRINCIPAL [--ttl SECONDS]`,
    with the key from FMC_PRINCIPAL_KEY_FILE."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fmlang.backends.data.identity")
    parser.add_argument("principal", help='the principal, as grants name it ("team:ml")')
    parser.add_argument("--ttl", type=int, default=3600, help="seconds it stays valid")
    args = parser.parse_args(argv)
    key, problem = principal_key()
    if key is None:
        assert problem is not None
        print(f"error[{problem.code}]: {problem.message}", file=sys.stderr)
        return 2
    print(issue_token(args.principal, args.ttl, key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
