"""`fmc serve`. Heavy imports (torch, the server) happen inside."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fmlang.cli.run_cmd import render_stage_error


@click.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--out", "out_dir", type=click.Path(), default=None,
              help="build folder (default: .fm-build/<spec name>)")  # fmt: skip
@click.option("--deploy", "deploy", default=None, help="which deployment (default: the only one)")
@click.option("--host", default=None, help="address to listen on (default: the spec's)")
@click.option("--port", type=int, default=None, help="port (default: the spec's)")
def serve(file: str, out_dir: str | None, deploy: str | None, host: str | None,
          port: int | None) -> None:  # fmt: skip
    """Serve FILE's deployed model and its adapters over HTTP (OpenAI-style API)."""
    from fmlang.api import build as build_artifacts
    from fmlang.api import check_paths
    from fmlang.backends.serve_config import serve_config, served_deployments
    from fmlang.cli.main import report
    from fmlang.errors import StageError

    spec_path = Path(file)
    result = check_paths([spec_path], verify=True)
    if not result.ok:
        sys.exit(report(result, "rich"))
    target = Path(out_dir) if out_dir else Path(".fm-build") / spec_path.stem
    try:
        build_artifacts(result, target)
        names = served_deployments(target)
        chosen = deploy or (names[0] if len(names) == 1 else "")
        config = serve_config(target.resolve(), chosen, host, port)
        from fmlang.backends.serve.server import run as run_server

        run_server(config)
    except StageError as exc:
        sys.exit(render_stage_error(result, exc, "rich"))
