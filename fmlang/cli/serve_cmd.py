"""`fmc serve`: a spec's deployment (`fmc serve FILE`, built and run here), or a build's
`server.json` alone (`fmc serve --config DIR/deploy/<name>/server.json`, what the emitted
containers run against the mounted build folder). Either serves registered versions:
`--version REF` names one, else the `current` pointer (`fmc rollback`), else the newest whose
gates all passed; a failing one only with `--allow-failed-gates` (release.py). The version
served is printed before the model loads. Heavy imports (torch, the server) happen
inside."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fmlang.cli.run_cmd import render_stage_error

if TYPE_CHECKING:
    from fmlang.errors import StageError


@click.command()
@click.argument("file", type=click.Path(), required=False)
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="serve a build's deploy/<name>/server.json without the spec")  # fmt: skip
@click.option("-o", "--out", "out_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--deploy", "deploy", default=None, help="which deployment (default: the only one)")
@click.option("--host", default=None, help="address to listen on (default: the spec's)")
@click.option("--port", type=int, default=None, help="port (default: the spec's)")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="a Host header name to answer to besides localhost and the bound address "
              "(a reverse proxy's); repeatable")  # fmt: skip
@click.option("--api-keys", "api_keys", type=click.Path(dir_okay=False), default=None,
              help="file of `PRINCIPAL KEY` or `PRINCIPAL sha256:HEX` lines (default: "
              "$FMC_API_KEYS_FILE; FMC_API_KEY_<NAME> variables add keys)")  # fmt: skip
@click.option("--no-auth", is_flag=True, default=False,
              help="serve without API keys or audit entries: loopback addresses only")  # fmt: skip
@click.option("--audit-log", "audit_log", type=click.Path(dir_okay=False), default=None,
              help="the audit log of access decisions (default: the build folder's "
              "audit.log; $FMC_AUDIT_LOG gets a copy)")  # fmt: skip
@click.option("--version", "version", default=None, metavar="REF",
              help="serve this registered version (hash prefix, name@N or tag) instead of "
              "the current or newest passing one")  # fmt: skip
@click.option("--allow-failed-gates", is_flag=True, default=False,
              help="serve a version whose runtime gates failed (never a superseded "
              "one)")  # fmt: skip
def serve(file: str | None, config_path: str | None, out_dir: str | None, deploy: str | None,
          host: str | None, port: int | None, allow_hosts: tuple[str, ...],
          api_keys: str | None, no_auth: bool, audit_log: str | None, version: str | None,
          allow_failed_gates: bool) -> None:  # fmt: skip
    """Serve FILE's deployed model and its adapters over HTTP (OpenAI-style API), or the
    build folder's server.json given with --config. Requests need an API key of a
    principal the deployment grants `query` (`Authorization: Bearer KEY`)."""
    if (file is None) == (config_path is None):
        raise click.UsageError("give a spec FILE or --config PATH, not both or neither")
    access = _Access(
        Path(api_keys) if api_keys else None,
        no_auth,
        Path(audit_log) if audit_log else None,
        version,
        allow_failed_gates,
    )
    if config_path is not None:
        if out_dir is not None or deploy is not None:
            raise click.UsageError("--out and --deploy choose a spec's deployment; --config "
                                   "names the deployment's server.json itself")  # fmt: skip
        _serve_config(Path(config_path), host, port, allow_hosts, access)
    else:
        assert file is not None
        _serve_spec(Path(file), out_dir, deploy, host, port, allow_hosts, access)


@dataclass(frozen=True)
class _Access:
    """--api-keys, --no-auth, --audit-log; --version and --allow-failed-gates."""

    api_keys: Path | None
    no_auth: bool
    audit_log: Path | None
    version: str | None = None
    allow_failed_gates: bool = False

    def gate(self, config: Any) -> Any:
        """The checks before the model loads (exposure.py): the address the deployment's
        visibility allows, then keys and the audit log; the gate to serve behind."""
        from fmlang.backends.serve.exposure import check_address, prepare_gate

        check_address(config.host, config.visibility)
        return prepare_gate(config, self.api_keys, no_auth=self.no_auth, audit_log=self.audit_log)


def _serve_spec(spec_path: Path, out_dir: str | None, deploy: str | None, host: str | None,
                port: int | None, allow_hosts: tuple[str, ...],
                access: _Access) -> None:  # fmt: skip
    """Check and build the spec, then serve its deployment from the build folder."""
    from fmlang.api import build as build_artifacts
    from fmlang.api import check_paths
    from fmlang.backends.serve_config import serve_plan, served_deployments
    from fmlang.cli.main import report
    from fmlang.errors import StageError

    result = check_paths([spec_path], verify=True)
    if not result.ok:
        sys.exit(report(result, "rich"))
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec_path.stem
    try:
        build_artifacts(result, target)
        names = served_deployments(target)
        chosen = deploy or (names[0] if len(names) == 1 else "")
        plan = serve_plan(target.resolve(), chosen, host, port, access.version,
                          access.allow_failed_gates)  # fmt: skip
        config = _allowing(_announce(plan), allow_hosts)
        gate = access.gate(config)
        from fmlang.backends.serve.server import run as run_server

        run_server(config, gate)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, "rich"))


def _serve_config(path: Path, host: str | None, port: int | None,
                  allow_hosts: tuple[str, ...], access: _Access) -> None:  # fmt: skip
    """Serve a build's server.json (or a ServeConfig file) with no spec at hand."""
    from fmlang.backends.serve_config import serve_plan_file
    from fmlang.errors import StageError

    try:
        plan = serve_plan_file(path, host, port, access.version, access.allow_failed_gates)
        config = _allowing(_announce(plan), allow_hosts)
        gate = access.gate(config)
        from fmlang.backends.serve.server import run as run_server

        run_server(config, gate)
    except StageError as exc:
        sys.exit(_report(exc))


def _announce(plan: Any) -> Any:
    """Say which registered version each adapter is, before the model loads; the config."""
    for chosen in plan.versions:
        click.echo(chosen.describe(), err=True)
        if chosen.allowed_failure:
            click.echo(f"warning: {chosen.version.ref} failed its runtime gates and is served "
                       "because of --allow-failed-gates", err=True)  # fmt: skip
    return plan.config


def _allowing(config: Any, allow_hosts: tuple[str, ...]) -> Any:
    """The serve configuration with `--allow-host` names added to its allowed_hosts."""
    if not allow_hosts:
        return config
    return config.model_copy(update={"allowed_hosts": (*config.allowed_hosts, *allow_hosts)})


def _report(exc: StageError) -> int:
    """The diagnostics as `error[FMxxxx]: …` lines with their notes and help on stderr (no
    spec, so no excerpts); exit 2 when each is an I/O problem, else 1."""
    from fmlang.cli.main import EXIT_INPUT, EXIT_USAGE
    from fmlang.diagnostics import render
    from fmlang.diagnostics.codes import is_io

    for diagnostic in exc.diagnostics:
        lines = [render.short(diagnostic), *(f"  = note: {n}" for n in diagnostic.notes)]
        lines += [f"  = help: {diagnostic.help}"] if diagnostic.help else []
        click.echo("\n".join(lines), err=True)
    return EXIT_USAGE if all(is_io(d.code) for d in exc.diagnostics) else EXIT_INPUT
