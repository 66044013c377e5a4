"""The run report (`fmlang/backends/report/`): after `fmc run`, PNGs under `run/report/` and a
self-contained `run/report.html`, listed in `run/report.json`; sections left out when their
inputs are missing; the page rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fmlang.backends.report import write_run_report
from fmlang.cli.main import cli

PNG = b"\x89PNG\r\n\x1a\n"

SPEC = """\
import std.models.tiny_causal_lm

dataset tickets {
  source jsonl("tickets.jsonl")
  schema {
    id: string @id
    question: text
    product: category @protected
    kind: label[ok, spam] @gold
  }
  split { train 70%, test 30% by hash(id) }
  grant read, label, train to "team:ml"
}

labels triage on tickets.train {
  classes [ok, spam]
  lf pills:    lower(question) contains "pills" -> spam
  lf cheap:    lower(question) contains "cheap" -> spam
  lf password: lower(question) contains "password" -> ok
}

model helper {
  base    tiny_causal_lm
  task    classify(triage)
  adapter lora(rank = 4, alpha = 8, targets = [q_proj, v_proj])
  max_seq 32
  train {
    data      = triage
    input     = question
    max_steps = 20
    lr        = 1e-3
    batch     = 4
    seed      = 3
  }
  eval {
    on      = [tickets.test]
    metrics = [accuracy]
    by      = [product]
  }
}

constraints helper {
  accuracy >= 0.3 on tickets.test
  max_gap(accuracy, by = product) <= 0.9 on tickets.test
}
"""

SECTIONS = ["stages", "labeling-functions", "label-model", "training", "gates", "groups",
            "resources"]  # fmt: skip


class Page(HTMLParser):
    """Well-formedness (every element closed in order), images, scripts, links, sections."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.links: list[str] = []
        self.sections: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.images += [found.get("src") or ""] if tag == "img" else []
        self.scripts += tag == "script"
        self.links += [found.get("href") or ""] if tag == "a" else []
        self.sections += [found.get("id") or ""] if tag == "section" else []
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> tuple[Path, dict[str, Any]]:
    """One `fmc run` of the spec above (a tiny Llama classifier on labelled tickets); the
    build folder and the run's JSON summary."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "tiny-causal-lm").symlink_to(tiny_model)
    rows = [{"id": str(i), "product": ["app", "web", "phone"][i % 3],
             "question": f"buy cheap pills now {i}" if i % 3 == 0 else f"reset my password {i}?",
             "kind": "spam" if i % 3 == 0 else "ok"} for i in range(60)]  # fmt: skip
    (folder / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "helper.fm").write_text(SPEC, encoding="utf-8")
    build = folder / "build"
    spec = str(folder / "helper.fm")
    argv = ["run", spec, "-o", str(build), "--as", "team:ml", "--format", "json"]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return build, json.loads(result.stdout)


def image_of(data: bytes) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every row: a truncated or corrupt PNG raises here
    return image


def test_a_run_writes_valid_pictures_and_a_self_contained_page(
    built: tuple[Path, dict[str, Any]],
) -> None:
    build, summary = built
    listed = json.loads((build / "run/report.json").read_text())["pictures"]
    assert listed["page"] == "run/report.html"
    names = sorted(Path(p).name for p in listed["images"])
    assert names == ["label-model.png", "labels-triage.lfs.png", "resources.png",
                     "train-helper.tickets.test.product.png", "training.png"]  # fmt: skip
    assert sorted(p.name for p in (build / "run/report").iterdir()) == names
    pictures = [(build / p).read_bytes() for p in listed["images"]]
    for data in pictures:
        assert data.startswith(PNG)
        image = image_of(data)
        assert image.width > 300 and image.height > 150
        assert len(image.getcolors(1 << 20) or []) > 10, "more than a blank canvas"

    text = (build / "run/report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.stack == [] and page.scripts == 0
    assert "http://" not in text and "https://" not in text and 'src="/' not in text
    assert page.sections == SECTIONS
    embedded = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert embedded == pictures, "the page embeds exactly the PNGs written, in order"
    assert "labels/triage.report.html" in page.links  # the labels stage's own page
    assert "max_gap(accuracy, by = product) on tickets.test" in text
    metrics = json.loads((build / "run/models/helper/metrics.json").read_text())
    gap = next(g for g in metrics["gates"] if g["metric"] == "max_gap")
    assert (gap["by"], gap["of"], gap["split"]) == ("product", "accuracy", "tickets.test")
    assert summary["artifacts"]["pictures"].endswith("run/report.html")
    assert (build / "run/report.html").stat().st_mode & 0o077 == 0  # private, like run/


def test_chromium_renders_the_page(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no `chromium` on PATH (Debian: apt-get install chromium)")
    build, _ = built
    shot = tmp_path / "shot.png"
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
            "--window-size=1280,2400", (build / "run/report.html").as_uri()]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = image_of(shot.read_bytes()).convert("RGB")
    assert image.size == (1280, 2400)
    colours = image.getcolors(1 << 24) or []
    assert len(colours) > 50, "a blank or single-colour screenshot"
    # the pictures rendered, not only the text: the bars' blue covers a visible area
    blue = sum(count for count, rgb in colours if rgb == (0x4C, 0x72, 0xB0))
    assert blue > 2000, blue


def _write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)


def _group(correct: int, rows: int) -> dict[str, Any]:
    matrix = [[correct, rows - correct], [0, 0]]
    return {"rows": rows, "accuracy": correct / rows,
            "confusion": {"classes": ["a", "b"], "matrix": matrix}}  # fmt: skip


def test_missing_inputs_leave_their_sections_out(tmp_path: Path) -> None:
    stages = [
        {"stage": "labels:l", "skipped": True, "outputs": ["run/labels/l.analysis.json"]},
        {"stage": "train:m", "skipped": False, "outputs": ["run/models/m/metrics.json"]},
        {"stage": "merge:x", "skipped": False, "outputs": ["run/merges/x/metrics.json"]},
    ]
    _write(tmp_path / "run/report.json", {"schema_version": "1", "stages": stages})
    _write(tmp_path / "run/merges/x/metrics.json", "{ not json")  # damaged: left out
    groups = {"<b>north</b>": _group(30, 40), "south": _group(18, 20)}
    metrics = {
        "train": {"steps": 30, "loss_curve": [[10, 0.9], [20, 0.6], [30, 0.5]],
                  "early_stopping": {"split": "d.valid", "checks": [{"step": 15, "loss": 0.7}]}},
        "eval": {"d.test": {"rows": 60, "accuracy": 0.8, "by": {"region": {"groups": groups}}}},
        "predicted": {"latency@cpu_2core": "1.78 s"},
        "latency": {"cpu_2core": {"measured": True, "p50_ms": 1650.0, "p95_ms": 1712.5,
                                  "load": {"loaded": True, "cores": 2, "other_cores": 1.2}},
                    "h100": {"measured": False, "why": "not this machine's kind"}},
    }  # fmt: skip
    _write(tmp_path / "run/models/m/metrics.json", metrics)
    (tmp_path / "run/report").mkdir()
    (tmp_path / "run/report/stale.png").write_bytes(PNG)  # drawn by an earlier run

    assert write_run_report(tmp_path) == []
    text = (tmp_path / "run/report.html").read_text(encoding="utf-8")
    assert Page(text).sections == ["stages", "training", "groups", "resources"]
    assert (
        '<td>latency on cpu_2core (p95; p50 1,650 ms)</td><td class="num">1,780 ms</td>'
        '<td class="num">1,712 ms</td><td>measured while other processes used the cores' in text
    )
    assert "&lt;b&gt;north&lt;/b&gt;" in text and "<b>north" not in text
    assert "[0.5981, 0.8581] (wilson)" in text  # 30 of 40, as the gates compute it
    drawn = ["training.png", "train-m.d.test.region.png", "resources.png"]
    assert sorted(p.name for p in (tmp_path / "run/report").iterdir()) == sorted(drawn)
    listed = json.loads((tmp_path / "run/report.json").read_text())["pictures"]
    assert listed["images"] == [f"run/report/{name}" for name in drawn]


def test_a_gap_gate_recorded_without_its_column_is_found_in_the_lock(tmp_path: Path) -> None:
    """Gate records written before they named `by`/`of`: the IR in fm.lock.json says."""
    _write(tmp_path / "run/report.json", {"stages": [
        {"stage": "train:m", "outputs": ["run/models/m/metrics.json"]}]})  # fmt: skip
    groups = {"north": _group(30, 40), "south": _group(18, 20)}
    gate = {"line": 9, "metric": "max_gap", "op": "<=", "bound": 0.1, "measured": 0.15,
            "passed": False, "ci_low": 0.01, "ci_high": 0.3, "confidence": 0.95}  # fmt: skip
    _write(tmp_path / "run/models/m/metrics.json", {"gates": [gate], "eval": {
        "d.test": {"by": {"region": {"groups": groups}}}}})  # fmt: skip
    constraint = {
        "kind": "fairness",
        "target": "m",
        "op": "<=",
        "bound": {"value": 0.1},
        "on_data": {"dataset": "d", "split": "test"},
        "options": [{"name": "of", "value": "accuracy"}, {"name": "by", "value": "region"}],
    }
    _write(tmp_path / "fm.lock.json", {"ir": {"constraints": [constraint]}})  # fmt: skip
    assert write_run_report(tmp_path) == []
    text = (tmp_path / "run/report.html").read_text(encoding="utf-8")
    assert Page(text).sections == ["stages", "training", "gates", "groups"]
    assert (
        "<p>max_gap(accuracy, by = region) on d.test &lt;= 0.1: gap 0.15 [0.01, 0.3] at 95%, "
        '<span class="fail">FAIL</span>.</p>' in text
    )


def test_without_matplotlib_the_run_is_warned_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "run/report.json", {"stages": [
        {"stage": "train:m", "outputs": ["run/models/m/metrics.json"]}]})  # fmt: skip
    _write(tmp_path / "run/models/m/metrics.json", {"train": {"loss_curve": [[1, 0.5]]}})
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    (diagnostic,) = write_run_report(tmp_path)
    assert diagnostic.code == "FM1160" and "`matplotlib` is not installed" in diagnostic.message
    assert not (tmp_path / "run/report.html").exists()
    assert write_run_report(tmp_path / "nothing-ran-here") == []
