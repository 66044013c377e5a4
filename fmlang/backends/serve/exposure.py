"""What `fmc serve` checks before it listens: who can reach the address (the deployment's
`visibility`), and who may query (API keys for the granted principals, an audit log that
takes entries). Each refusal is a diagnostic; nothing loads before these pass.

- `visibility internal` (the default): the server listens only where private networks reach
  it: addresses that are not globally reachable (loopback, RFC 1918 and RFC 4193 private,
  link-local, RFC 6598 shared as some pod networks use, and the other special-purpose
  ranges; `fmlang.verify.exposure.is_internal`). A host name must resolve to such
  addresses only; `0.0.0.0` or `::` (every interface, what a container binds) is allowed
  only on a machine whose interfaces all have such addresses (each interface's primary
  IPv4 address and every IPv6 address; where they cannot be listed, it is refused).
  Otherwise FM1074.
- `visibility public`: any address.
- Either way the deployment's `query` grants are enforced with API keys (auth.py): no keys
  is FM1070, a configuration that grants nobody FM1075. `--no-auth` turns the checks off
  for trying a server out, only on a loopback address and never for a public deployment
  (FM1073); it writes no audit entries.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fmlang.backends.data.access import AUDIT_ENV
from fmlang.backends.data.audit_chain import signing_key
from fmlang.backends.serve.audit_writer import AuditWriter
from fmlang.backends.serve.auth import KEY_ENV_PREFIX, KEYS_FILE_ENV, Gate, load_keys
from fmlang.backends.serve.config import ServeConfig
from fmlang.diagnostics import error
from fmlang.errors import StageError
from fmlang.verify.exposure import Address, is_internal, is_loopback

WILDCARDS = ("0.0.0.0", "::", "")


def interface_addresses() -> list[Address]:
    """This machine's addresses: each interface's primary IPv4 address and every IPv6
    address (Linux); OSError when they cannot be listed."""
    import fcntl
    import struct

    found: list[Address] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(ipaddress.IPv4Address(answer[20:24]))
    inet6 = Path("/proc/net/if_inet6")
    if inet6.exists():
        for line in inet6.read_text(encoding="ascii").splitlines():
            found.append(ipaddress.IPv6Address(bytes.fromhex(line.split()[0])))
    return found


def _resolved(host: str) -> list[Address]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_address(
    host: str,
    visibility: str,
    interfaces: Callable[[], Iterable[Address]] = interface_addresses,
) -> None:
    """Raise FM1074 when an `internal` deployment would listen where public networks reach."""
    if visibility == "public":
        return
    bare = host.strip("[]")
    try:
        if bare in WILDCARDS:
            addresses = [a for a in interfaces() if bare != "0.0.0.0" or a.version == 4]
            where = f"every interface (`{host or '0.0.0.0'}`)"
        else:
            addresses = _resolved(bare)
            where = f"`{host}`"
    except OSError as exc:
        raise StageError(_public(host, f"its addresses cannot be listed: {exc}")) from None
    public = sorted({str(a) for a in addresses if not is_internal(a)})
    if public:
        raise StageError(_public(host, f"{where} includes public address {', '.join(public)}"))


def _public(host: str, why: str) -> Any:
    return error(
        "FM1074",
        f"the deployment is `visibility internal`, but the server would listen on `{host}`: {why}",
        help="listen on a loopback or private address (--host 127.0.0.1, or the machine's "
        "private address), or declare `visibility public` in the deploy block and rebuild",
    )


# ---- access ------------------------------------------------------------------------------


def audit_logs(config: ServeConfig, audit_log: Path | None,
               environ: Mapping[str, str] = os.environ) -> tuple[Path, ...]:  # fmt: skip
    """Where decisions go: --audit-log, else the configuration's (a build's audit.log); and
    a copy in the log FMC_AUDIT_LOG names when it is another file."""
    primary = audit_log or (Path(config.audit_log) if config.audit_log else None)
    copy = Path(environ[AUDIT_ENV]) if environ.get(AUDIT_ENV) else None
    if primary is None:
        primary, copy = copy, None
    if primary is None:
        raise StageError(
            error(
                "FM1076",
                "cannot write the serving audit log: the configuration names none",
                help=f"name one with --audit-log PATH (or {AUDIT_ENV})",
            )
        )
    if copy is not None and os.path.realpath(copy) == os.path.realpath(primary):
        copy = None
    return (primary,) if copy is None else (primary, copy)


def prepare_gate(
    config: ServeConfig,
    api_keys: Path | None,
    *,
    no_auth: bool = False,
    audit_log: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Gate | None:
    """The gate `config` is served behind (None with --no-auth, on loopback only), its audit
    log opened with a `serve-start` entry. Raises StageError (FM1070 to FM1076)."""
    if no_auth:
        if config.visibility == "public":
            raise StageError(
                error(
                    "FM1073",
                    "--no-auth serves without checking API keys, and the deployment is "
                    "`visibility public`, which requires them",
                    help="configure API keys (--api-keys FILE) instead of --no-auth",
                )
            )
        if not is_loopback(config.host):
            raise StageError(
                error(
                    "FM1073",
                    f"--no-auth serves without checking API keys, so only on a loopback "
                    f"address, not `{config.host}`",
                    help="drop --host (the default is 127.0.0.1), or configure API keys "
                    "instead of --no-auth",
                )
            )
        return None
    deploy = config.deploy or config.model_name
    if not config.query_principals:
        raise StageError(
            error(
                "FM1075",
                f"nobody may query `{deploy}`: the serve configuration grants `query` to no "
                "principal",
                help='add `grant query to "PRINCIPAL"` to the deploy block and rebuild (or '
                "list `query_principals` in the configuration); --no-auth serves on "
                "loopback without keys",
            )
        )
    keys = load_keys(api_keys, environ)
    if not len(keys):
        granted = ", ".join(f"`{p}`" for p in config.query_principals)
        raise StageError(
            error(
                "FM1070",
                f"`{deploy}` grants `query` to {granted}, but no API keys were given",
                help=f"give a key file of `PRINCIPAL KEY` lines with --api-keys FILE (or "
                f"{KEYS_FILE_ENV}) or {KEY_ENV_PREFIX}<NAME>=`PRINCIPAL KEY` variables; "
                "`python -m fmlang.backends.serve.auth PRINCIPAL` issues a key; --no-auth "
                "serves on loopback without keys",
            )
        )
    allowed = frozenset(config.query_principals)
    writer = AuditWriter(audit_logs(config, audit_log, environ), signing_key(environ))
    writer.start(
        {
            "event": "serve-start",
            "action": "serve",
            "stage": f"query:{deploy}",
            "query_principals": sorted(allowed),
            "key_principals": sorted(keys.principals),
            "keys": len(keys),
            "visibility": config.visibility,
            "listen": f"{config.host}:{config.port}",
        }
    )
    return Gate(deploy, allowed, keys, writer)
