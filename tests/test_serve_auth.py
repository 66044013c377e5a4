"""`fmc serve` enforces the deployment's `grant query`: bearer API keys mapped to principals,
401/403 in OpenAI's error shape (checked with the official `openai` client), every decision
in the hash-chained audit log, startup refused without keys, the address held to the
deployment's `visibility`, and server.json carrying the same principals as the spec."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fmlang.backends.data.audit_verify import verify_log
from fmlang.backends.serve import auth
from fmlang.backends.serve.auth import KeyTable, load_keys
from fmlang.backends.serve.config import ServeConfig, from_build
from fmlang.backends.serve.exposure import check_address, prepare_gate
from fmlang.cli.main import cli
from fmlang.errors import StageError

GRANTED, OTHER = "service:app", "team:intruder"
APP_KEY = "fmc-app-key-0123456789abcdef"
INTRUDER_KEY = "fmc-intruder-key-0123456789abcdef"
DIGEST_KEY = "fmc-digest-only-key-0123456789"


def _code(raised: pytest.ExceptionInfo[StageError]) -> str:
    return raised.value.diagnostics[0].code


def _key_file(folder: Path, *lines: str, mode: int = 0o600) -> Path:
    path = folder / "api-keys"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def _keys_text() -> list[str]:
    sha = hashlib.sha256(DIGEST_KEY.encode()).hexdigest()
    return [
        "# principal key",
        f"{GRANTED} {APP_KEY}",
        f"{OTHER} {INTRUDER_KEY}",
        "",
        f"service:batch sha256:{sha}",
    ]


# ---- the key table -------------------------------------------------------------------


def test_keys_map_to_principals_from_plaintext_digests_and_the_environment(
    tmp_path: Path,
) -> None:
    env = {"FMC_API_KEY_CI": "team:ci fmc-ci-key-0123456789abcdef"}
    table = load_keys(_key_file(tmp_path, *_keys_text()), env)
    assert table.principal(APP_KEY) == GRANTED
    assert table.principal(INTRUDER_KEY) == OTHER
    assert table.principal(DIGEST_KEY) == "service:batch"
    assert table.principal("fmc-ci-key-0123456789abcdef") == "team:ci"
    assert table.principal(APP_KEY + "x") is None and table.principal("") is None
    assert APP_KEY not in repr(table)  # neither the keys nor their digests are shown
    named = load_keys(None, {"FMC_API_KEYS_FILE": str(tmp_path / "api-keys")})
    assert named.principal(APP_KEY) == GRANTED


def test_every_stored_digest_is_compared_whichever_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No early exit: the lookup compares all digests with compare_digest, for the first
    key, the last key and an unknown one alike."""
    keys = [f"fmc-key-number-{i:02d}-abcdefgh" for i in range(12)]
    table = KeyTable(tuple((auth.digest(k), f"p{i}") for i, k in enumerate(keys)))
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, expected in ((keys[0], "p0"), (keys[-1], "p11"), ("unknown-key", None)):
        calls.clear()
        assert table.principal(presented) == expected
        assert len(calls) == len(keys)
        assert all(b == auth.digest(presented) for _, b in calls)  # digests, never keys


@pytest.mark.parametrize(
    ("lines", "mode", "says"),
    [
        (["service:app"], 0o600, "not `PRINCIPAL KEY`"),
        (["service:app short"], 0o600, "at least 16"),
        (["service:app sha256:abc"], 0o600, "64 hex digits"),
        ([f"a {APP_KEY}", f"b {APP_KEY}"], 0o600, "same key"),
        ([f"a {APP_KEY}"], 0o644, "plaintext keys and can be read by every user"),
    ],
)
def test_invalid_key_entries_are_fm1072(
    tmp_path: Path, lines: list[str], mode: int, says: str
) -> None:
    with pytest.raises(StageError) as raised:
        load_keys(_key_file(tmp_path, *lines, mode=mode), {})
    assert _code(raised) == "FM1072" and says in raised.value.diagnostics[0].message
    assert APP_KEY not in str(raised.value.diagnostics[0])  # never echo a key


def test_a_world_readable_file_of_digests_is_fine_and_a_missing_file_is_fm1071(
    tmp_path: Path,
) -> None:
    sha = hashlib.sha256(APP_KEY.encode()).hexdigest()
    table = load_keys(_key_file(tmp_path, f"{GRANTED} sha256:{sha}", mode=0o644), {})
    assert table.principal(APP_KEY) == GRANTED
    with pytest.raises(StageError) as raised:
        load_keys(tmp_path / "absent", {})
    assert _code(raised) == "FM1071"


def test_the_key_issuer_prints_a_key_and_its_digest_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert auth.main([GRANTED]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    principal, stored = out[1].split(": ", 1)[1].split()
    assert principal == GRANTED and stored == "sha256:" + auth.digest(key).hex()


# ---- starting: keys, audit log, address ------------------------------------------------


def _plain(tmp_path: Path, **extra: Any) -> ServeConfig:
    values: dict[str, Any] = {
        "base_model": str(tmp_path / "model"),
        "deploy": "helper",
        "query_principals": [GRANTED],
        "audit_log": str(tmp_path / "audit.log"),
    }
    return ServeConfig.model_validate({**values, **extra})


def test_startup_refusals(tmp_path: Path) -> None:
    keys = _key_file(tmp_path, *_keys_text())
    with pytest.raises(StageError) as raised:
        prepare_gate(_plain(tmp_path), None, environ={})
    assert _code(raised) == "FM1070" and "service:app" in str(raised.value.diagnostics[0])
    with pytest.raises(StageError) as raised:
        prepare_gate(_plain(tmp_path, query_principals=[]), keys, environ={})
    assert _code(raised) == "FM1075"
    with pytest.raises(StageError) as raised:
        prepare_gate(_plain(tmp_path, host="0.0.0.0"), None, no_auth=True, environ={})
    assert _code(raised) == "FM1073"
    assert prepare_gate(_plain(tmp_path), None, no_auth=True, environ={}) is None
    with pytest.raises(StageError) as raised:
        prepare_gate(_plain(tmp_path, visibility="public"), None, no_auth=True, environ={})
    assert _code(raised) == "FM1073" and "public" in raised.value.diagnostics[0].message
    with pytest.raises(StageError) as raised:
        prepare_gate(_plain(tmp_path, audit_log=None), keys, environ={})
    assert _code(raised) == "FM1076"
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        unwritable = _plain(tmp_path, audit_log=str(tmp_path / "ro" / "sub" / "audit.log"))
        with pytest.raises(StageError) as raised:
            prepare_gate(unwritable, keys, environ={})
        assert _code(raised) == "FM1076"


def _addresses(*texts: str) -> Any:
    return lambda: [ipaddress.ip_address(t) for t in texts]


def test_internal_visibility_refuses_a_public_address() -> None:
    for host in ("127.0.0.1", "10.1.2.3", "192.168.0.9", "fd00::1", "100.64.1.1", "localhost"):
        check_address(host, "internal")
    with pytest.raises(StageError) as raised:
        check_address("8.8.8.8", "internal")
    assert _code(raised) == "FM1074"
    check_address("8.8.8.8", "public")
    pod = _addresses("127.0.0.1", "10.244.0.7", "::1", "fe80::1")
    check_address("0.0.0.0", "internal", pod)
    host = _addresses("127.0.0.1", "10.0.0.2", "1.1.1.1")
    with pytest.raises(StageError) as raised:
        check_address("0.0.0.0", "internal", host)
    assert "1.1.1.1" in raised.value.diagnostics[0].message
    v6 = _addresses("127.0.0.1", "2606:4700::1111")
    check_address("0.0.0.0", "internal", v6)  # IPv4 only: the IPv6 address is not bound
    with pytest.raises(StageError):
        check_address("::", "internal", v6)


# ---- the real server ------------------------------------------------------------------


pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")


@dataclass
class Served:
    url: str
    log: Path
    gate: auth.Gate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    from fmlang.backends.serve.fixtures import build_random_adapters, build_tiny_causal_lm

    root = tmp_path_factory.mktemp("auth")
    base = build_tiny_causal_lm(root / "base", seed=4)
    return base, build_random_adapters(base, root / "adapters", [4], seed=5)


@pytest.fixture
def served(tiny: tuple[Path, dict[str, Path]], tmp_path: Path) -> Iterator[Served]:
    from fmlang.backends.serve.runtime import build_engine
    from fmlang.backends.serve.server import serve_in_background

    base, adapters = tiny
    config = _plain(
        tmp_path, base_model=str(base), adapters={k: str(v) for k, v in adapters.items()}
    )
    gate = prepare_gate(config, _key_file(tmp_path, *_keys_text()), environ={})
    assert gate is not None
    running = serve_in_background(config, build_engine(config), gate)
    try:
        yield Served(running.url, tmp_path / "audit.log", gate)
    finally:
        running.stop()
        gate.writer.close()


def _entries(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _client(served: Served, key: str) -> Any:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)


def _openai_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["code"]) == ("invalid_request_error", code)


def test_keys_decide_and_every_decision_is_audited(served: Served) -> None:
    url = served.url
    body = {"model": "a0", "prompt": "hello", "max_tokens": 2}
    # No key, a malformed header, a wrong key: 401 with a Bearer challenge.
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
        answer = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=30)
        _openai_error(answer, 401, "invalid_api_key")
        assert answer.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.AuthenticationError):
        _client(served, "fmc-wrong-key-0123456789abcdef").completions.create(
            model="a0", prompt="hello", max_tokens=2
        )
    # A known key whose principal is not granted `query`: 403.
    intruder = httpx.post(f"{url}/v1/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {INTRUDER_KEY}"})  # fmt: skip
    _openai_error(intruder, 403, "permission_denied")
    with pytest.raises(openai.PermissionDeniedError):
        _client(served, INTRUDER_KEY).chat.completions.create(
            model="a0", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    with pytest.raises(openai.PermissionDeniedError):
        _client(served, INTRUDER_KEY).models.list()
    # The granted principal: answers, through the official client.
    app = _client(served, APP_KEY)
    completion = app.completions.create(model="a0", prompt="hello", max_tokens=2)
    assert completion.model == "a0" and completion.choices
    chat = app.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert chat.choices[0].message.role == "assistant"
    assert sorted(m.id for m in app.models.list()) == ["a0", "base"]
    # Probes and metrics stay open; their figures name no adapter.
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path
    assert "a0" not in httpx.get(url + "/metrics", timeout=10).text
    assert httpx.get(url + "/openapi.json", timeout=10).status_code == 401

    served.gate.writer.close()
    text = served.log.read_text(encoding="utf-8")
    for secret in (APP_KEY, INTRUDER_KEY, auth.digest(APP_KEY).hex()):
        assert secret not in text  # principals, never keys
    verdict = verify_log(served.log)
    assert verdict.ok, verdict.diagnostics
    entries = _entries(served.log)
    assert entries[0]["event"] == "serve-start" and entries[0]["query_principals"] == [GRANTED]
    decisions = [
        (e["decision"], e["principal"], e["endpoint"], e["model"], e.get("reason", "")[:6])
        for e in entries[1:]
    ]
    assert decisions == [
        ("denied", None, "/v1/completions", None, "FM1077"),
        ("denied", None, "/v1/completions", None, "FM1077"),
        ("denied", None, "/v1/completions", None, "FM1078"),
        ("denied", None, "/v1/completions", None, "FM1078"),
        ("denied", OTHER, "/v1/completions", None, "FM1079"),
        ("denied", OTHER, "/v1/chat/completions", None, "FM1079"),
        ("denied", OTHER, "/v1/models", None, "FM1079"),
        ("allowed", GRANTED, "/v1/completions", "a0", ""),
        ("allowed", GRANTED, "/v1/chat/completions", "base", ""),
        ("allowed", GRANTED, "/v1/models", None, ""),
        ("denied", None, "/openapi.json", None, "FM1077"),
    ]
    assert {e["stage"] for e in entries[1:]} == {"query:helper"}
    assert {e["client"] for e in entries[1:]} == {"127.0.0.1"}


def test_a_denial_flood_is_written_in_batches_and_does_not_stall_answers(
    served: Served,
) -> None:
    """Many refusals at once are all recorded, in order, and a granted request is answered
    in the middle of them."""
    import asyncio

    async def flood() -> float:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
            refusals = [client.get("/v1/models") for _ in range(400)]
            started = time.perf_counter()
            granted = client.get("/v1/models", headers={"Authorization": f"Bearer {APP_KEY}"})
            answers = await asyncio.gather(*refusals, granted)
            assert [a.status_code for a in answers] == [401] * 400 + [200]
            return time.perf_counter() - started

    elapsed = asyncio.run(flood())
    served.gate.writer.close()
    entries = _entries(served.log)[1:]
    assert len(entries) == 401
    assert [e["seq"] for e in entries] == list(range(2, 403))
    assert verify_log(served.log).ok
    assert elapsed < 30


def test_an_unwritable_audit_log_answers_503(served: Served) -> None:
    served.gate.writer.failure = auth.error("FM1076", "disk full")  # as a failed append sets
    answer = httpx.get(f"{served.url}/v1/models", timeout=10,
                       headers={"Authorization": f"Bearer {APP_KEY}"})  # fmt: skip
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "audit_unavailable"


# ---- `fmc serve --config`, as a process -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fmc_serve_config_enforces_the_grants_it_names(
    tiny: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    base, _ = tiny
    config = tmp_path / "server.json"
    config.write_text(_plain(tmp_path, base_model=str(base)).model_dump_json(), "utf-8")
    fmc = Path(sys.executable).parent / "fmc"
    refused = subprocess.run([fmc, "serve", "--config", str(config)], capture_output=True,
                             text=True, env={**os.environ, "FMC_API_KEYS_FILE": ""},
                             check=False, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "error[FM1070]" in refused.stderr, refused.stderr
    port = _free_port()
    keys = _key_file(tmp_path, *_keys_text())
    command = [fmc, "serve", "--config", str(config), "--api-keys", str(keys),
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        statuses = [
            httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code
            for headers in (
                {},
                {"Authorization": f"Bearer {INTRUDER_KEY}"},
                {"Authorization": f"Bearer {APP_KEY}"},
            )
        ]
        assert statuses == [401, 403, 200]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert verify_log(tmp_path / "audit.log").ok
    decisions = [e.get("decision") for e in _entries(tmp_path / "audit.log")]
    assert decisions == [None, "denied", "denied", "allowed"]


def test_no_auth_is_for_loopback_only(tmp_path: Path) -> None:
    config = tmp_path / "server.json"
    config.write_text(_plain(tmp_path).model_dump_json(), "utf-8")
    result = CliRunner().invoke(
        cli, ["serve", "--config", str(config), "--no-auth", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2 and "error[FM1073]" in result.output, result.output
    public = tmp_path / "public.json"
    public.write_text(_plain(tmp_path, host="8.8.8.8").model_dump_json(), "utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(public)])
    assert result.exit_code == 2 and "error[FM1074]" in result.output, result.output


# ---- what the spec grants is what server.json carries ---------------------------------

SPEC = """\
import std.models.tiny_causal_lm

model helper {
  base    tiny_causal_lm
  task    generate
  grant deploy to "team:ml"
}

deploy helper {
  visibility public
  local { port = 8080 }
  grant query to "service:app", "team:ml"
}
"""


def test_server_json_carries_the_access_models_query_principals(tmp_path: Path) -> None:
    from fmlang.api import check_text, compile_spec
    from fmlang.lower.manifests import lower_deployment
    from fmlang.verify.access import AccessModel

    result = check_text(SPEC, file="helper.fm", base=tmp_path, verify=True)
    assert result.ok and result.report is not None, result.diagnostics
    spec = compile_spec(result)
    files = lower_deployment(spec, spec.deployments[0], dict(result.report.knobs))
    document = json.loads(files["deploy/helper/server.json"])
    allowed = AccessModel(spec).allowed("query:helper")
    assert document["query_principals"] == sorted(allowed) == ["service:app", "team:ml"]
    assert document["visibility"] == "public"
    build = tmp_path / "build"
    document["base"]["weights"] = {"kind": "hub", "location": "org/model", "revision": None}
    config = from_build(document, build)
    assert frozenset(config.query_principals) == allowed
    assert (config.visibility, config.deploy) == ("public", "helper")
    assert config.audit_log == str(build / "audit.log")


@pytest.mark.parametrize(
    ("visibility", "host", "codes"),
    [
        ("", '"1.1.1.1"', ["FM0614"]),
        ("visibility internal", '"8.8.8.8"', ["FM0614"]),
        ("visibility public", '"8.8.8.8"', []),
        ("", '"10.0.0.5"', []),
        ("", '"0.0.0.0"', []),  # depends on the machine: checked when the server starts
    ],
)
def test_an_internal_endpoint_on_a_public_literal_is_fm0614(
    tmp_path: Path, visibility: str, host: str, codes: list[str]
) -> None:
    from fmlang.api import check_text

    spec = SPEC.replace("visibility public", visibility).replace(
        "local { port = 8080 }", f"local {{ host = {host}, port = 8080 }}"
    )
    result = check_text(spec, file="helper.fm", base=tmp_path, verify=True)
    found = [d.code for d in result.diagnostics if d.code.startswith("FM061")]
    assert found == codes, result.diagnostics


def test_an_endpoint_without_query_grants_is_refused_statically(tmp_path: Path) -> None:
    from fmlang.api import check_text

    spec = SPEC.replace('  grant query to "service:app", "team:ml"\n', "")
    result = check_text(spec, file="helper.fm", base=tmp_path, verify=True)
    assert "FM0611" in [d.code for d in result.diagnostics]
    assert not result.ok


def test_an_allowed_answer_waits_for_its_entry_on_disk(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a slow disk, the answer still arrives only after its entry is in the log."""
    from fmlang.backends.serve import audit_writer

    real = audit_writer.audit.append_many

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)
        return real(*args, **kwargs)

    monkeypatch.setattr(audit_writer.audit, "append_many", slow)
    app = _client(served, APP_KEY)
    for ask in (
        lambda: app.completions.create(model="a0", prompt="hello", max_tokens=2),
        lambda: app.models.list(),
    ):
        before = len(_entries(served.log))
        ask()
        entries = _entries(served.log)
        assert len(entries) == before + 1 and entries[-1]["decision"] == "allowed"
