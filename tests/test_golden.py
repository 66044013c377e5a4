"""Golden IR and diagnostics for every example and every case under tests/golden/.

Each case is a folder holding `input.fm` (or, for examples, the spec itself) and the expected
`ir.json` or `diagnostics.txt`. `pytest --update-golden` rewrites them; review the diff.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fmlang.api import check_paths, compile_spec
from fmlang.diagnostics.render import short

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = sorted((ROOT / "examples").rglob("*.fm"))
CASES = sorted(p.parent for p in GOLDEN.glob("*/input.fm"))


def _compare(path: Path, actual: str, update: bool) -> None:
    if update or not path.exists():
        if not update:
            pytest.fail(f"{path} is missing; run pytest --update-golden and review it")
        path.write_text(actual, encoding="utf-8")
        return
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs (--update-golden)"


def _ir_text(spec_path: Path) -> tuple[str | None, str]:
    result = check_paths([spec_path])
    diagnostics = "".join(short(d) + "\n" for d in result.diagnostics)
    if not result.ok:
        return None, diagnostics
    spec = compile_spec(result)
    return json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", diagnostics


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_ir(spec_path: Path, update_golden: bool) -> None:
    ir, diagnostics = _ir_text(spec_path)
    assert ir is not None, f"example does not check clean:\n{diagnostics}"
    name = "_".join(spec_path.relative_to(ROOT / "examples").with_suffix("").parts)
    _compare(GOLDEN / "examples" / f"{name}.ir.json", ir, update_golden)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, update_golden: bool) -> None:
    ir, diagnostics = _ir_text(case / "input.fm")
    if ir is None:
        relative = re.sub(r"^\S*input\.fm:", "input.fm:", diagnostics, flags=re.MULTILINE)
        _compare(case / "diagnostics.txt", relative, update_golden)
    else:
        _compare(case / "ir.json", ir, update_golden)
