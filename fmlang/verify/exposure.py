"""Who can reach an endpoint: `visibility internal` (the default) against the addresses a
deployment names. The rule is the one `fmc serve` applies when it starts
(fmlang/backends/serve/exposure.py, which imports `is_internal` from here): an internal
endpoint listens only on addresses that are not globally reachable: loopback, private
(RFC 1918, RFC 4193), link-local, shared (RFC 6598, some pod networks) and the other
special-purpose ranges. Statically, a `local { host = "…" }` that is a public address literal
is FM0614; host names and `0.0.0.0` depend on the machine and are checked at start.
"""

from __future__ import annotations

import ipaddress

from fmlang.diagnostics import Diagnostic, error
from fmlang.ir.nodes import Spec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_internal(address: Address) -> bool:
    """Not globally reachable (IANA's special-purpose registries: loopback, private,
    link-local, shared, documentation ranges, ...), and not the unspecified address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_unspecified and not address.is_global


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address literal (brackets around IPv6 allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_diagnostics(spec: Spec) -> list[Diagnostic]:
    """FM0614 for an internal deployment whose `local` target listens on a public address."""
    out: list[Diagnostic] = []
    for deployment in spec.deployments:
        if deployment.visibility == "public":
            continue
        for target in deployment.targets:
            try:
                address = ipaddress.ip_address((target.host or "").strip("[]"))
            except ValueError:
                continue  # a name, or no host: resolved when the server starts
            if address.is_unspecified or is_internal(address):
                continue
            span = target.span.to_span() if target.span else None
            out.append(
                error(
                    "FM0614",
                    f"`{deployment.name}` is `visibility internal`, but its `{target.kind}` "
                    f"target listens on the public address {address}",
                    span,
                    "a public address",
                    help="listen on a loopback or private address, or declare "
                    "`visibility public` (which requires API keys of granted principals)",
                )
            )
    return out
