"""The audit log proves what it claims: one test per promise in the reference's "The audit log".

Most tests append records directly (fast); two run `fmc run` and `fmc audit verify` for the
exit codes a user sees.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fmlang.backends.data import audit
from fmlang.backends.data.audit import append_with_key
from fmlang.backends.data.audit_chain import (
    KEY_ENV,
    QUARANTINE_EVENT,
    AuditKey,
    entry_hash,
    head_path,
    line_bytes,
    read_head,
    seal,
    signing_key,
    torn_path,
    write_head,
)
from fmlang.backends.data.audit_verify import Anchor, Verdict, verify_log
from fmlang.cli.main import cli
from fmlang.errors import StageError
from tests.data_helpers import write_csv

RUN_SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
  }
  grant read to "team:a"
}
"""
KEY = AuditKey(b"correct horse battery staple 42")
OTHER_KEY = AuditKey(b"another key of the same length!")


def _record(n: int) -> dict[str, Any]:
    return {"principal": f"team:{n}", "action": "read", "decision": "allowed", "files": []}


def _written(log: Path, count: int, key: AuditKey | None = None) -> list[dict[str, Any]]:
    return [append_with_key(log, _record(n), key) for n in range(1, count + 1)]


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines(keepends=True)


def _errors(verdict: Verdict) -> list[tuple[str, int | None]]:
    """(code, line) of each error, in order."""
    return [
        (d.code, d.primary_span.line if d.primary_span else None)
        for d in verdict.diagnostics
        if d.severity.value == "error"
    ]


def _warnings(verdict: Verdict) -> list[str]:
    return [d.code for d in verdict.diagnostics if d.severity.value == "warning"]


def _verify_cli(log: Path, *args: str, key: AuditKey | None = None) -> Any:
    env = {KEY_ENV: key.secret.decode() if key else None, "FMC_AUDIT_LOG": None}
    return CliRunner(env=env).invoke(cli, ["audit", "verify", str(log), *args])


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


# ---- a whole log verifies, and says whether it is signed ------------------------------------


def test_an_untouched_log_verifies_and_says_it_is_unsigned(log: Path) -> None:
    entries = _written(log, 3)
    verdict = verify_log(log)
    assert verdict.ok and verdict.diagnostics == ()
    assert (verdict.entries, verdict.head, verdict.key_id) == (3, entries[-1]["hash"], None)
    head = read_head(log)
    assert head is not None and (head.entries, head.hash, head.pending) == (3, verdict.head, ())
    result = _verify_cli(log)
    assert result.exit_code == 0, result.output
    assert "3 entries, chain intact, head matches" in result.output
    assert "unsigned" in result.output


def test_a_signed_log_names_its_key_and_never_the_secret(log: Path) -> None:
    _written(log, 3, KEY)
    verdict = verify_log(log, KEY)
    assert verdict.ok and verdict.key_id == KEY.id
    result = _verify_cli(log, key=KEY)
    assert result.exit_code == 0, result.output
    assert f"signed with {KEY.id}, every MAC verifies" in result.output
    secret = KEY.secret.decode()
    assert secret not in result.output
    assert secret not in log.read_text() + head_path(log).read_text()


# ---- truncation, deletion, appends -----------------------------------------------------------


@pytest.mark.parametrize("keep", [3, 0])
def test_a_truncated_tail_is_detected(log: Path, keep: int) -> None:
    _written(log, 5)
    log.write_text("".join(_lines(log)[:keep]), encoding="utf-8")  # the chain itself still holds
    verdict = verify_log(log)
    assert _errors(verdict) == [("FM0711", keep + 1)]
    assert "records 5 entries" in verdict.diagnostics[0].message
    result = _verify_cli(log)
    assert result.exit_code == 1 and f"{log}:{keep + 1}:1: error[FM0711]" in result.output
    with pytest.raises(StageError) as refused:  # the next append refuses too: no silent healing
        append_with_key(log, _record(9), None)
    assert refused.value.diagnostics[0].code == "FM0711"


def test_a_deleted_log_is_detected(log: Path) -> None:
    _written(log, 3)
    log.unlink()
    verdict = verify_log(log)
    assert _errors(verdict) == [("FM0712", 1)]
    assert verdict.diagnostics[0].primary_span.file == str(head_path(log))  # type: ignore[union-attr]
    result = _verify_cli(log)
    assert result.exit_code == 1 and "error[FM0712]" in result.output
    with pytest.raises(StageError) as refused:
        append_with_key(log, _record(9), None)
    assert refused.value.diagnostics[0].code == "FM0712"
    assert not log.exists()  # the refusal does not recreate an empty log


@pytest.mark.parametrize("head", [None, "{}", "not json"])
def test_a_deleted_or_invalid_head_is_detected(log: Path, head: str | None) -> None:
    _written(log, 2)
    if head is None:
        head_path(log).unlink()
    else:
        head_path(log).write_text(head)
    assert _errors(verify_log(log)) == [("FM0714", 1)]
    assert _verify_cli(log).exit_code == 1
    with pytest.raises(StageError) as refused:
        append_with_key(log, _record(3), None)
    assert refused.value.diagnostics[0].code == "FM0714"


def _forged_next(log: Path, record: dict[str, Any], key: AuditKey | None) -> dict[str, Any]:
    """A correctly chained next entry, written the way an editor of the file would."""
    last = json.loads(_lines(log)[-1])
    entry = seal({**record, "seq": last["seq"] + 1, "time": last["time"], "prev": last["hash"]},
                 key)  # fmt: skip
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def test_an_appended_chained_line_is_detected_by_the_head(log: Path) -> None:
    _written(log, 3)
    _forged_next(log, _record(99), None)
    verdict = verify_log(log)
    assert _errors(verdict) == [("FM0713", 4)]
    assert "entry 4 was appended without updating the head" in verdict.diagnostics[0].message
    assert _verify_cli(log).exit_code == 1


def test_an_appended_line_with_an_updated_head_is_detected_by_the_mac(log: Path) -> None:
    _written(log, 3, KEY)
    forged = _forged_next(log, _record(99), OTHER_KEY)  # signed, but not with the log's key
    write_head(log, 4, forged["hash"], (), OTHER_KEY)
    verdict = verify_log(log, KEY)
    assert _errors(verdict) == [("FM0715", 1), ("FM0715", 4)]  # the head, then line 4
    assert "signed with another key" in verdict.diagnostics[1].message
    unsigned = _forged_next_unsigned_rewrite(log)
    assert _errors(verify_log(log, KEY)) == [("FM0715", 1), ("FM0715", unsigned)]


def _forged_next_unsigned_rewrite(log: Path) -> int:
    """Replace the last line by an unsigned, correctly chained one; update the head."""
    lines = _lines(log)
    last = json.loads(lines[-1])
    body = {k: v for k, v in last.items() if k not in ("key_id", "mac", "hash")}
    entry = seal(body, None)
    log.write_text("".join(lines[:-1]) + json.dumps(entry, sort_keys=True) + "\n")
    write_head(log, entry["seq"], entry["hash"], (), None)
    return int(entry["seq"])


def _rechained(log: Path, key: AuditKey | None, keep_macs: bool = False) -> None:
    """Edit line 2, then recompute every hash (and MAC, with `key`; or keep the old MACs)
    and the head."""
    entries, prev = [], "0" * 64
    for number, line in enumerate(_lines(log), start=1):
        entry = json.loads(line)
        entry["prev"] = prev
        entry["decision"] = "denied" if number == 2 else entry["decision"]
        if keep_macs:
            entry["hash"] = entry_hash(entry)
        else:
            entry = seal(entry, key)
        entries.append(entry)
        prev = entry["hash"]
    log.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    write_head(log, len(entries), prev, (), key)


@pytest.mark.parametrize(("keep_macs", "line"), [(False, 1), (True, 2)])
def test_a_full_rechain_is_detected_with_the_key(log: Path, keep_macs: bool, line: int) -> None:
    _written(log, 4, KEY)
    _rechained(log, None, keep_macs)  # by someone who can write both files, without the key
    verdict = verify_log(log, KEY)
    assert _errors(verdict) == [("FM0715", 1), ("FM0715", line)]  # the head, then an entry
    problem = "does not verify" if keep_macs else "is not signed"
    assert problem in verdict.diagnostics[1].message
    assert _verify_cli(log, key=KEY).exit_code == 1


def test_an_unsigned_rechain_is_detected_by_a_head_it_did_not_update(log: Path) -> None:
    _written(log, 4)
    head = head_path(log).read_bytes()
    _rechained(log, None)
    head_path(log).write_bytes(head)
    verdict = verify_log(log)
    assert _errors(verdict) == [("FM0707", 4)]
    assert "is not the one the head records" in verdict.diagnostics[0].message


def test_a_full_rechain_is_not_detected_without_a_key_or_by_the_key_holder(log: Path) -> None:
    """The documented limit: whoever can produce valid hashes (and MACs) rewrites history."""
    _written(log, 4)
    _rechained(log, None)
    assert verify_log(log).ok
    _written(log.with_name("signed.log"), 4, KEY)
    _rechained(log.with_name("signed.log"), KEY)
    assert verify_log(log.with_name("signed.log"), KEY).ok


# ---- edits and reorders (as before heads) ----------------------------------------------------


@pytest.mark.parametrize(("edit", "line"), [("edit", 2), ("delete", 2), ("swap", 2), ("insert", 3)])
@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_edits_and_reorders_are_detected(log: Path, edit: str, line: int,
                                         key: AuditKey | None) -> None:  # fmt: skip
    _written(log, 6, key)
    lines = _lines(log)
    if edit == "edit":
        lines[1] = lines[1].replace('"allowed"', '"denied"')
    elif edit == "delete":
        del lines[1]
    elif edit == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif edit == "insert":
        lines.insert(2, lines[1])
    log.write_text("".join(lines))
    verdict = verify_log(log, key)
    assert _errors(verdict) == [("FM0707", line)]  # the first line that no longer verifies
    assert verdict.entries == line - 1
    assert _verify_cli(log, key=key).exit_code == 1


# ---- keys ------------------------------------------------------------------------------------


def test_a_signed_log_needs_its_key(log: Path) -> None:
    _written(log, 2, KEY)
    without = verify_log(log)
    assert _errors(without) == [("FM0716", 1)]  # cannot be checked: exit 2, not "intact"
    assert KEY.id in without.diagnostics[0].message
    assert _verify_cli(log).exit_code == 2
    assert _errors(verify_log(log, OTHER_KEY))[0] == ("FM0715", 1)
    assert _verify_cli(log, key=OTHER_KEY).exit_code == 1


@pytest.mark.parametrize(
    ("written_with", "appended_with"), [(None, KEY), (KEY, None), (KEY, OTHER_KEY)]
)
def test_an_append_never_mixes_signing_modes(log: Path, written_with: AuditKey | None,
                                             appended_with: AuditKey | None) -> None:  # fmt: skip
    _written(log, 1, written_with)
    with pytest.raises(StageError) as refused:
        append_with_key(log, _record(2), appended_with)
    assert refused.value.diagnostics[0].code == "FM0716"
    assert len(_lines(log)) == 1


def test_a_short_key_is_refused() -> None:
    with pytest.raises(StageError) as refused:
        signing_key({KEY_ENV: "short"})
    assert refused.value.diagnostics[0].code == "FM0716"
    assert signing_key({KEY_ENV: ""}) is None
    key = signing_key({KEY_ENV: KEY.secret.decode()})
    assert key is not None and key.id == KEY.id and KEY.secret.decode() not in repr(key)


# ---- crashes and full disks ------------------------------------------------------------------


def _full_disk_after(monkeypatch: pytest.MonkeyPatch, fraction: float) -> None:
    """The next write to the log stores `fraction` of its bytes, then fails with ENOSPC."""

    def partial(log: Path, entries: tuple[dict[str, Any], ...]) -> None:
        data = b"".join(line_bytes(entry) for entry in entries)
        with log.open("ab") as handle:
            handle.write(data[: int(len(data) * fraction)])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit, "_write_lines", partial)


def test_a_torn_last_line_is_reported_and_repaired(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _written(log, 2, KEY)
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 0.5)
        with pytest.raises(StageError) as failed:
            append_with_key(log, _record(3), KEY)
    assert failed.value.diagnostics[0].code == "FM0718"  # an I/O diagnostic, not a crash
    fragment = log.read_bytes().split(b"\n")[-1]
    assert fragment and not log.read_bytes().endswith(b"\n")
    verdict = verify_log(log, KEY)
    assert verdict.ok and _warnings(verdict) == ["FM0717"]  # not tampering
    assert "line 3 is torn" in verdict.diagnostics[0].message
    assert "it is the start of entry 3" in verdict.diagnostics[0].message
    assert _verify_cli(log, key=KEY).exit_code == 0

    append_with_key(log, _record(4), KEY)  # the next append repairs, and says so
    entries = [json.loads(line) for line in _lines(log)]
    assert [e.get("event") or e["principal"] for e in entries] == [
        "team:1", "team:2", QUARANTINE_EVENT, "team:3", "team:4",
    ]  # fmt: skip
    marker = entries[2]
    assert marker["sha256"] == hashlib.sha256(fragment).hexdigest()
    assert (marker["length"], marker["fragment_is_its_start"]) == (len(fragment), True)
    kept = json.loads(torn_path(log).read_text())
    assert (
        kept["fragment"].encode() == fragment and kept["interrupted_entry"]["principal"] == "team:3"
    )
    verdict = verify_log(log, KEY)
    assert verdict.ok and verdict.diagnostics == () and verdict.entries == 5
    assert verdict.notes and "kept in `audit.log.torn`" in verdict.notes[0]


def test_a_repair_cut_short_is_finished_once(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _written(log, 1)
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 0.5)
        with pytest.raises(StageError):
            append_with_key(log, _record(2), None)
    with monkeypatch.context() as patch:  # the repair stops after listing its entries
        patch.setattr(audit, "_truncate", lambda log, end: _raise(OSError(errno.EIO, "EIO")))
        with pytest.raises(StageError):
            append_with_key(log, _record(3), None)
    assert _warnings(verify_log(log)) == ["FM0717"]
    append_with_key(log, _record(4), None)
    entries = [json.loads(line) for line in _lines(log)]
    assert [e.get("event") or e["principal"] for e in entries] == [
        "team:1", QUARANTINE_EVENT, "team:2", "team:3", "team:4",
    ]  # fmt: skip
    assert len(torn_path(log).read_text().splitlines()) == 1  # the fragment is kept once
    assert verify_log(log).diagnostics == ()


def _raise(exc: Exception) -> None:
    raise exc


def test_a_torn_line_no_append_explains_is_refused(log: Path) -> None:
    _written(log, 2)
    with log.open("ab") as handle:
        handle.write(b'{"principal": "team:x", "dec')
    assert _errors(verify_log(log)) == [("FM0713", 3)]
    assert _verify_cli(log).exit_code == 1
    with pytest.raises(StageError) as refused:
        append_with_key(log, _record(3), None)
    assert refused.value.diagnostics[0].code == "FM0713"


def test_a_crash_between_the_log_and_the_head_is_not_tampering(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _written(log, 2)
    calls: list[int] = []

    def second_write_fails(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # the head that would record the new entry
            raise OSError(errno.EIO, "Input/output error")
        write_head(*args)

    with monkeypatch.context() as patch:
        patch.setattr(audit, "write_head", second_write_fails)
        with pytest.raises(StageError):
            append_with_key(log, _record(3), None)
    assert len(_lines(log)) == 3 and read_head(log).entries == 2  # type: ignore[union-attr]
    verdict = verify_log(log)
    assert verdict.ok and _warnings(verdict) == ["FM0717"]  # unlike a forged append (FM0713)
    append_with_key(log, _record(4), None)
    verdict = verify_log(log)
    assert verdict.diagnostics == () and verdict.entries == 4


def test_a_crash_before_the_log_write_is_completed_by_the_next_append(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _written(log, 1)
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 0.0)
        with pytest.raises(StageError):
            append_with_key(log, _record(2), None)
    assert _warnings(verify_log(log)) == ["FM0717"]
    append_with_key(log, _record(3), None)
    assert [json.loads(line)["principal"] for line in _lines(log)] == ["team:1", "team:2", "team:3"]
    assert verify_log(log).diagnostics == ()


# ---- the command line ------------------------------------------------------------------------


def test_verify_exit_codes_and_json(log: Path, tmp_path: Path) -> None:
    _written(log, 2)
    result = _verify_cli(log, "--format", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert (document["ok"], document["entries"], document["signed_with"]) == (True, 2, None)
    missing = _verify_cli(tmp_path / "nope.log")  # no log, no head: nothing to verify
    assert missing.exit_code == 2 and "error[FM0708]" in missing.output
    (tmp_path / "empty.log").touch()  # the same, not "0 entries, intact"
    empty = _verify_cli(tmp_path / "empty.log")
    assert empty.exit_code == 2 and "empty and has no head" in empty.output
    short_key = CliRunner(env={KEY_ENV: "short"}).invoke(cli, ["audit", "verify", str(log)])
    assert short_key.exit_code == 2 and "error[FM0716]" in short_key.output
    bad = _verify_cli(log, "--expect", "2:xyz")
    assert bad.exit_code == 2


def test_an_anchor_detects_a_rollback_of_log_and_head(log: Path) -> None:
    _written(log, 3)
    old_log, old_head = log.read_bytes(), head_path(log).read_bytes()
    entries = _written(log, 2)
    anchor = f"5:{entries[-1]['hash'][:16]}"
    assert f"--expect {anchor}" in _verify_cli(log).output  # printed, to record elsewhere
    log.write_bytes(old_log)
    head_path(log).write_bytes(old_head)
    assert _verify_cli(log).exit_code == 0  # the head was rolled back too: not detectable
    assert _errors(verify_log(log, anchor=Anchor(5, entries[-1]["hash"][:16]))) == [("FM0711", 4)]
    assert _verify_cli(log, "--expect", anchor).exit_code == 1


def test_fmc_run_after_a_torn_write_does_not_exit_101(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmlang.cli import main as cli_main

    write_csv(tmp_path / "c.csv", ["id", "text"], [["1", "hello"], ["2", "subscribe now"]])
    spec = tmp_path / "s.fm"
    spec.write_text(RUN_SPEC, encoding="utf-8")
    build = tmp_path / "b"
    log = build / "audit.log"
    _written(log, 1)
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 0.3)
        with pytest.raises(StageError):
            append_with_key(log, _record(2), None)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("FMC_AUDIT_LOG", raising=False)
    argv = ["fmc", "run", str(spec), "-o", str(build), "--until", "data", "--as", "team:a"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 0, capsys.readouterr().err
    entries = [json.loads(line) for line in _lines(log)]
    assert entries[1]["event"] == QUARANTINE_EVENT and entries[2]["principal"] == "team:2"
    assert any(e.get("principal") == "team:a" for e in entries[3:])
    assert verify_log(log).diagnostics == ()


# ---- concurrent writers ----------------------------------------------------------------------


def _append_many(log: str, worker: int) -> None:
    for n in range(10):
        append_with_key(Path(log), _record(100 * worker + n), None)


def test_concurrent_appends_keep_one_chain(log: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(log), w)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    verdict = verify_log(log)
    assert verdict.diagnostics == () and verdict.entries == 30
