"""How the principal is established (asserted, the OS account, a signed token), refusing
asserted principals when verified ones are required, the audit log recording which, its copy
under FMC_AUDIT_LOG, and the file modes of what a run writes."""

from __future__ import annotations

import hmac
import json
import os
import pwd
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmlang.atomic import write_text_atomic
from fmlang.backends.data import identity
from fmlang.backends.data.audit_verify import verify_log
from fmlang.backends.data.identity import (
    ASSERTED,
    KEY_FILE_ENV,
    OS,
    REQUIRE_ENV,
    TOKEN,
    TOKEN_ENV,
    establish,
    issue_token,
    verify_token,
)
from fmlang.cli.main import cli
from fmlang.errors import StageError
from tests.data_helpers import run_spec, write_csv

LOGIN = f"user:{pwd.getpwuid(os.getuid()).pw_name}"
KEY = b"0123456789abcdef-a-test-key"
NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (TOKEN_ENV, KEY_FILE_ENV, REQUIRE_ENV, "FMC_PRINCIPAL", "FMC_AUDIT_LOG"):
        monkeypatch.delenv(name, raising=False)


def _key_file(tmp_path: Path, key: bytes = KEY, mode: int = 0o600) -> Path:
    path = tmp_path / "principal.key"
    path.write_bytes(key + b"\n")
    path.chmod(mode)
    return path


def _env(key_file: Path | None, token: str | None = None, **more: str) -> dict[str, str]:
    env = {KEY_FILE_ENV: str(key_file)} if key_file else {}
    return env | ({TOKEN_ENV: token} if token else {}) | more


def _code(principal: identity.Principal | None) -> str | None:
    assert principal is not None
    return principal.problem.code if principal.problem else None


# Establishing the principal.


def test_a_bare_name_is_asserted() -> None:
    principal = establish("team:ml", environ={})
    assert principal == identity.Principal("team:ml", ASSERTED)
    assert establish(None, environ={"FMC_PRINCIPAL": "team:x"}) == identity.Principal(
        "team:x", ASSERTED
    )
    assert establish(None, environ={}) is None


def test_os_is_the_real_uids_login_not_the_environment() -> None:
    spoofed = {"USER": "root", "LOGNAME": "root", "FMC_PRINCIPAL": "os"}
    assert establish(None, environ=spoofed) == identity.Principal(LOGIN, OS)
    assert establish("os", environ={}) == identity.Principal(LOGIN, OS)
    assert establish(LOGIN, environ={}) == identity.Principal(LOGIN, OS)  # the same account
    other = "user:someone-else-entirely"
    assert establish(other, environ={}) == identity.Principal(other, ASSERTED)


def test_a_signed_token_establishes_its_principal(tmp_path: Path) -> None:
    token = issue_token("team:ml", 600, KEY, now=NOW)
    principal = establish(None, environ=_env(_key_file(tmp_path), token), now=NOW)
    assert principal == identity.Principal("team:ml", TOKEN)
    same = establish("team:ml", environ=_env(_key_file(tmp_path), token), now=NOW)
    assert same == identity.Principal("team:ml", TOKEN)


@pytest.mark.parametrize(
    ("token", "now"),
    [
        (issue_token("team:ml", 600, b"another-key-of-enough-bytes", now=NOW), NOW),
        (issue_token("team:ml", 600, KEY, now=NOW), NOW + 601),  # expired
        ("fmc1.not-a-payload.not-a-mac", NOW),
        ("team:ml", NOW),
    ],
    ids=["other-key", "expired", "garbage", "not-a-token"],
)
def test_a_token_that_does_not_verify_is_a_problem(tmp_path: Path, token: str, now: float) -> None:
    assert _code(establish(None, environ=_env(_key_file(tmp_path), token), now=now)) == "FM0731"


def test_a_token_with_its_payload_changed_does_not_verify(tmp_path: Path) -> None:
    prefix, _payload, mac = issue_token("team:ml", 600, KEY, now=NOW).split(".")
    forged_payload = issue_token("team:admin", 600, b"x" * 32, now=NOW).split(".")[1]
    forged = ".".join([prefix, forged_payload, mac])
    assert _code(establish(None, environ=_env(_key_file(tmp_path), forged), now=NOW)) == "FM0731"


def test_a_token_for_someone_else_than_the_claim_is_refused(tmp_path: Path) -> None:
    token = issue_token("team:ml", 600, KEY, now=NOW)
    principal = establish("team:admin", environ=_env(_key_file(tmp_path), token), now=NOW)
    assert _code(principal) == "FM0731"


def test_macs_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(identity.hmac, "compare_digest", spy)
    assert verify_token(issue_token("team:ml", 60, KEY, now=NOW), KEY, NOW) == ("team:ml", None)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("key", "mode"),
    [(KEY, 0o644), (b"short", 0o600), (None, 0o600)],
    ids=["readable-by-others", "too-short", "no-key-file"],
)
def test_an_unusable_key_is_a_problem(tmp_path: Path, key: bytes | None, mode: int) -> None:
    key_file = _key_file(tmp_path, key, mode) if key else None
    token = issue_token("team:ml", 600, KEY, now=NOW)
    assert _code(establish(None, environ=_env(key_file, token), now=NOW)) == "FM0732"


def test_required_verification_refuses_an_asserted_principal(tmp_path: Path) -> None:
    assert _code(establish("team:ml", environ={REQUIRE_ENV: "1"})) == "FM0733"
    assert _code(establish("team:ml", require_verified=True, environ={})) == "FM0733"
    assert _code(establish("os", require_verified=True, environ={})) is None
    token = issue_token("team:ml", 600, KEY, now=NOW)
    env = _env(_key_file(tmp_path), token, **{REQUIRE_ENV: "1"})
    assert _code(establish(None, environ=env, now=NOW)) is None


# Runs: the audit log, its copy, and file modes.

SPEC = """\
dataset d {
  source csv("d.csv", header = true)
  schema {
    id: string @id
    body: text
  }
  grant read to "PRINCIPAL"
}
"""


def _project(tmp_path: Path, principal: str) -> Path:
    write_csv(tmp_path / "p" / "d.csv", ["id", "body"], [["1", "hello"], ["2", "there"]])
    spec = tmp_path / "p" / "s.fm"
    spec.write_text(SPEC.replace("PRINCIPAL", principal), encoding="utf-8")
    return spec


def _entries(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_the_audit_log_records_how_the_principal_was_established(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _project(tmp_path, "team:ml")
    build = tmp_path / "b"
    monkeypatch.setenv(KEY_FILE_ENV, str(_key_file(tmp_path)))
    monkeypatch.setenv(TOKEN_ENV, issue_token("team:ml", 600, KEY))
    by_token = establish(None)  # as `fmc run` does: the token names the principal
    run_spec(spec, build, until="data", principal=by_token)
    monkeypatch.delenv(TOKEN_ENV)
    run_spec(spec, build, until="data", principal="team:ml")
    decisions = [
        (e["principal"], e["established"], e["decision"]) for e in _entries(build / "audit.log")
    ]
    assert (
        decisions
        == [("team:ml", "token", "allowed")] * 2 + [("team:ml", "asserted", "allowed")] * 2
    )


def test_an_unverified_principal_is_denied_and_each_denial_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _project(tmp_path, "team:ml")
    build = tmp_path / "b"
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(StageError) as caught:
        run_spec(spec, build, until="data", principal="team:ml")
    assert [d.code for d in caught.value.diagnostics] == ["FM0733"]
    assert not (build / "run" / "data").exists()
    [entry] = _entries(build / "audit.log")
    assert (entry["principal"], entry["established"], entry["decision"]) == (
        "team:ml", "asserted", "denied",
    )  # fmt: skip
    assert str(entry["reason"]).startswith("FM0733")


def test_cli_require_verified_refuses_as_name_and_accepts_as_os(tmp_path: Path) -> None:
    spec = _project(tmp_path, LOGIN)
    out = tmp_path / "b"
    argv = ["run", str(spec), "-o", str(out), "--until", "data", "--format", "short"]
    refused = CliRunner().invoke(cli, [*argv, "--as", LOGIN.replace("user:", "user:x-"),
                                       "--require-verified"])  # fmt: skip
    assert refused.exit_code == 1 and "FM0733" in refused.output
    ran = CliRunner().invoke(cli, [*argv, "--as", "os", "--require-verified"])
    assert ran.exit_code == 0, ran.output
    assert _entries(out / "audit.log")[-1]["established"] == "os"


def test_fmc_audit_log_adds_a_copy_and_cannot_divert_the_build_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _project(tmp_path, "team:ml")
    build = tmp_path / "b"
    copy = tmp_path / "central" / "audit.log"
    monkeypatch.setenv("FMC_AUDIT_LOG", str(copy))
    run_spec(spec, build, until="data", principal="team:ml")
    own, copied = _entries(build / "audit.log"), _entries(copy)
    chained = ("seq", "time", "prev", "hash")  # the record is the same; its place in each chain
    assert len(own) == 2 and [{k: v for k, v in e.items() if k not in chained} for e in own] == [
        {k: v for k, v in e.items() if k not in chained} for e in copied
    ]
    assert verify_log(build / "audit.log").ok and verify_log(copy).ok


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_outputs_and_the_audit_log_are_for_their_owner_alone(tmp_path: Path) -> None:
    spec = _project(tmp_path, "team:ml")
    out = tmp_path / "b"
    (out / "run").mkdir(parents=True, mode=0o755)  # left open by an earlier fmc
    (out / "run").chmod(0o755)
    argv = ["run", str(spec), "-o", str(out), "--until", "data", "--as", "team:ml"]
    previous = os.umask(0o022)
    try:
        result = CliRunner().invoke(cli, argv)
        assert os.umask(0o022) == 0o022, "the run restores the umask"
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert _mode(out / "run") & 0o077 == 0
    written = [p for p in (out / "run").rglob("*")]
    assert any(p.suffix == ".parquet" for p in written)
    assert all(_mode(p) & 0o077 == 0 for p in written), {str(p): oct(_mode(p)) for p in written}
    for name in ("audit.log", "audit.log.head"):
        assert _mode(out / name) == 0o600, name
    assert _mode(out / "fm.lock.json") & 0o044, "build artifacts keep the usual modes"


def test_a_file_written_atomically_is_no_more_open_than_its_folder(tmp_path: Path) -> None:
    private, shared = tmp_path / "private", tmp_path / "shared"
    for folder, mode in ((private, 0o700), (shared, 0o755)):
        folder.mkdir()
        folder.chmod(mode)
    previous = os.umask(0o022)
    try:
        write_text_atomic(private / "rows.json", "{}")
        write_text_atomic(shared / "plan.json", "{}")
    finally:
        os.umask(previous)
    assert _mode(private / "rows.json") == 0o600
    assert _mode(shared / "plan.json") == 0o644


def test_issuing_a_token_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_FILE_ENV, str(_key_file(tmp_path)))
    assert identity.main(["team:ml", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert establish(None, environ=_env(_key_file(tmp_path), token)) == identity.Principal(
        "team:ml", TOKEN
    )
