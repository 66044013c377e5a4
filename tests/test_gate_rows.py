"""FM0395: `fmc check` warns when an accuracy gate's split, or a fairness gate's group, has
too few rows for even a perfect score's interval to fit in the passing range (counted from
a small local jsonl or csv source, without DuckDB or torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmlang.api import check_paths

SPEC = """\
import std.models.minilm_l6

dataset reviews {
  source SOURCE
  schema {
    id:    string @id
    body:  text
    stars: label[negative, positive] @gold
    shop:  category @protected
  }
  split { train 50%, test 50% by hash(id) }
  grant read, label, train to "team:ml"
}

labels mood on reviews.train {
  classes [negative, positive]
  lf fine: body contains "fine" -> positive
}

model judge {
  base    minilm_l6
  task    classify(mood)
  adapter lora(rank = 4, targets = [query, value])
  train   { data = mood, input = body, epochs = 1 }
  eval    { on = [reviews.test], by = [shop] }
}

constraints judge {
  GATES
}
"""


def write(tmp_path: Path, shops: dict[str, int], gates: str, kind: str = "jsonl") -> Path:
    rows = [
        {"id": f"{shop}{i}", "body": "fine", "stars": "positive", "shop": shop}
        for shop, count in shops.items()
        for i in range(count)
    ]
    if kind == "jsonl":
        (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        source = 'jsonl("reviews.jsonl")'
    else:
        lines = ["id,body,stars,shop", *(",".join(r.values()) for r in rows)]
        (tmp_path / "reviews.csv").write_text("\n".join(lines) + "\n")
        source = 'csv("reviews.csv")'
    spec = tmp_path / "judge.fm"
    spec.write_text(SPEC.replace("SOURCE", source).replace("GATES", gates))
    return spec


def warnings(spec: Path) -> list[str]:
    result = check_paths([spec], verify=True, data=True)
    assert result.ok, [d.message for d in result.diagnostics]
    return [d.message for d in result.diagnostics if d.code == "FM0395"]


def test_a_split_too_small_for_its_accuracy_bound(tmp_path: Path) -> None:
    # 40 rows, half in test: a perfect score's 95% Wilson interval is 3.84 / 23.84 = 0.161
    # wide, wider than the 0.1 that passes `>= 0.9` but narrower than the 0.3 of `>= 0.7`
    spec = write(tmp_path, {"a": 40}, "accuracy >= 0.9 on reviews.test")
    (message,) = warnings(spec)
    assert "about 20 rows in `reviews.test`" in message
    assert "interval is 0.161 wide, wider than the 0.1" in message
    spec.write_text(spec.read_text().replace(">= 0.9", ">= 0.7"))
    assert warnings(spec) == []


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_fairness_names_each_group_too_small(tmp_path: Path, kind: str) -> None:
    # groups of 200, 30 and 10 rows: 100, 15 and 5 in test; a gap bound of 0.1 needs ~35
    spec = write(tmp_path, {"big": 200, "mid": 30, "tiny": 10},
                 "max_gap(accuracy, by = shop) <= 0.1 on reviews.test", kind)  # fmt: skip
    (message,) = warnings(spec)
    assert "`shop = mid` has about 15, `shop = tiny` has about 5 rows" in message
    assert "big" not in message


def test_what_cannot_be_counted_cheaply_is_left_to_the_run(tmp_path: Path) -> None:
    spec = write(tmp_path, {"a": 10}, "f1 >= 0.9 on reviews.test")
    assert warnings(spec) == []  # f1 is bootstrapped at run time: not estimated here
    gated = write(tmp_path, {"a": 10}, "accuracy >= 0.9 on reviews.test")
    result = check_paths([gated], verify=True)  # the editor's check: no data read
    assert not [d for d in result.diagnostics if d.code == "FM0395"]


def test_the_check_stays_free_of_duckdb_and_torch(tmp_path: Path) -> None:
    spec = write(tmp_path, {"a": 40}, "accuracy >= 0.9 on reviews.test")
    code = (
        "import sys\nfrom pathlib import Path\nfrom fmlang.api import check_paths\n"
        f"r = check_paths([Path({str(spec)!r})], verify=True, data=True)\n"
        "assert any(d.code == 'FM0395' for d in r.diagnostics)\n"
        "assert 'torch' not in sys.modules and 'duckdb' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
