"""The labels stage's pictures: a PNG of coverage, overlaps, conflicts and accuracy per
labeling function, and a self-contained HTML report with each function's numbers, for the
labels stage and for every `apply_to` target."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

from tests.data_helpers import GRANT, run_spec, write_csv

SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    text: text
    gold: label[ham, spam] @gold
  }
  split { train 70%, test 30% by hash(id) }
GRANT}

labels l on c.train {
  classes [ham, spam]
  lf link:   text ~ /https?:/i -> spam
  lf sub:    lower(text) contains "subscribe" -> spam
  lf song:   lower(text) contains "song" -> ham
  apply_to [c.test]
  model majority(tie = abstain)
GRANT}
""".replace("GRANT", GRANT)

PNG = b"\x89PNG\r\n\x1a\n"


class _Checker(HTMLParser):
    """Well-formedness: every opened element closed in order (void elements aside)."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.cells: list[str] = []
        self.images: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag == "script":
            self.scripts += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "td":
            self.cells.append(data)


def project(tmp_path: Path) -> Path:
    texts = [("check http://x.io {}", "spam"), ("subscribe please {}", "spam"),
             ("nice song {}", "ham"), ("a great song {}", "ham")]  # fmt: skip
    data = [[str(i), texts[i % 4][0].format(i), texts[i % 4][1]] for i in range(60)]
    write_csv(tmp_path / "c.csv", ["id", "text", "gold"], data)
    spec = tmp_path / "s.fm"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def check_page(page: Path, analysis: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == [] and checker.scripts == 0
    assert "http://" not in text and "https://" not in text  # nothing loads from the network
    (image,) = checker.images
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]).startswith(PNG)
    document = json.loads(analysis.read_text(encoding="utf-8"))
    for lf in document["analysis"]["lfs"]:
        row = checker.cells[checker.cells.index(lf["name"]) :][:10]
        assert row[2] == str(lf["fires"])
        assert row[3] == f"{lf['coverage']:.1%}" and row[5] == f"{lf['conflicts']:.1%}"
        assert row[8] == (f"{lf['accuracy']:.1%}" if lf["accuracy"] is not None else "-")


def test_reports_are_written_for_the_labels_and_each_applied_split(tmp_path: Path) -> None:
    build = tmp_path / "b"
    report = run_spec(project(tmp_path), build)
    for base in ("run/labels/l", "run/labels/l/c/test"):
        picture = build / f"{base}.report.png"
        assert picture.read_bytes().startswith(PNG)
        check_page(build / f"{base}.report.html", build / f"{base}.analysis.json")
    outputs = {o.stage: o.outputs for o in report.outcomes}
    assert "run/labels/l.report.html" in outputs["labels:l"]
    assert "run/labels/l/c/test.report.png" in outputs["labels:l@c.test"]


def test_the_report_escapes_what_it_shows(tmp_path: Path) -> None:
    from fmlang.backends.data.label_report import _page

    document = {
        "analysis": {
            "classes": ["<ham>", "spam"],
            "totals": {"rows": 1, "coverage": 1.0, "overlaps": 0.0, "conflicts": 0.0},
            "lfs": [
                {
                    "name": "a",
                    "polarity": [0],
                    "fires": 1,
                    "coverage": 1.0,
                    "overlaps": 0.0,
                    "conflicts": 0.0,
                    "correct": 1,
                    "incorrect": 0,
                    "accuracy": 1.0,
                    "learned_accuracy": None,
                }
            ],
            "warnings": [{"code": "FM0750", "message": "<script>alert(1)</script>"}],
        },
        "label_model": {"rows": 1, "covered": 1},
    }
    page = _page(document, PNG, "labels `<x>`")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;ham&gt;" in page and "labels `&lt;x&gt;`" in page
