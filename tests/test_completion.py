"""Shell completion through click's `_FMC_COMPLETE` protocol, run through the `fmc` entry
point exactly as the generated bash/zsh/fish scripts call it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fmlang.cli.help_text import HELP
from fmlang.cli.main import cli

SHELL_MARKERS = {
    "bash": "complete -o nosort -F _fmc_completion fmc",
    "zsh": "#compdef fmc",
    "fish": "complete --no-files --command fmc",
}


def fmc(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fmlang"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", sorted(SHELL_MARKERS))
def test_each_shell_gets_its_completion_script(shell: str) -> None:
    script = fmc({"_FMC_COMPLETE": f"{shell}_source"})
    assert SHELL_MARKERS[shell] in script
    assert f"_FMC_COMPLETE={shell}_complete" in script


def test_bash_completes_a_command_prefix() -> None:
    out = fmc({"_FMC_COMPLETE": "bash_complete", "COMP_WORDS": "fmc ch", "COMP_CWORD": "1"})
    assert out.split() == ["plain,check"]


def test_zsh_and_fish_complete_a_command_prefix_with_its_help() -> None:
    zsh = fmc({"_FMC_COMPLETE": "zsh_complete", "COMP_WORDS": "fmc ch", "COMP_CWORD": "1"})
    assert zsh.splitlines()[:2] == ["plain", "check"]
    fish = fmc({"_FMC_COMPLETE": "fish_complete", "COMP_WORDS": "fmc ch", "COMP_CWORD": "ch"})
    assert fish.startswith("plain,check\tParse and check FILES")


def test_explain_completes_diagnostic_codes() -> None:
    out = fmc(
        {"_FMC_COMPLETE": "bash_complete", "COMP_WORDS": "fmc explain fm060", "COMP_CWORD": "2"}
    )
    assert "plain,FM0601" in out.split()
    assert all(item.startswith("plain,FM060") for item in out.split())


def test_help_lists_every_command() -> None:
    listed = {line.split()[0] for line in HELP.split("Commands:\n", 1)[1].splitlines() if line}
    assert listed == set(cli.commands)
