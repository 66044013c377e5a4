"""Golden files for the adapter, training and launch lowering of every example model.

`tests/golden_lower/<example>/<model>/` holds what `fmc build` writes for the model under
`adapters/<model>/` and `train/<model>/`. Regenerate with `pytest --update-golden` and review
the diff before committing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.lower.launch import model_files

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden_lower"
EXAMPLES = {
    "youtube_spam": ("examples/youtube_spam/spam.fm", ("spam_filter",)),
    "support_assistant": ("examples/support_assistant/assistant.fm", ("support_assistant",)),
    "adapter_merge": (
        "examples/adapter_merge/merge.fm",
        ("billing_assistant", "shipping_assistant"),
    ),
}
CASES = [(example, name) for example, (_, names) in EXAMPLES.items() for name in names]


def lowered(example: str, name: str) -> dict[str, str]:
    """The model's files, keyed by file name (they all live in one folder per model)."""
    path = ROOT / EXAMPLES[example][0]
    result = check_text(path.read_text(encoding="utf-8"), file=str(path), base=path.parent,
                        verify=True)  # fmt: skip
    assert result.ok and result.report is not None, result.diagnostics
    spec = compile_spec(result)
    model = spec.model(name)
    assert model is not None
    files = model_files(spec, model, result.report.knobs)
    return {Path(key).name: text for key, text in files.items()}


@pytest.mark.parametrize(("example", "name"), CASES, ids=[f"{e}/{n}" for e, n in CASES])
def test_lowered_files_match_golden(example: str, name: str, update_golden: bool) -> None:
    produced = lowered(example, name)
    folder = GOLDEN / example / name
    if update_golden:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            stale.unlink()
        for file_name, text in produced.items():
            (folder / file_name).write_text(text, encoding="utf-8")
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}
    assert sorted(produced) == sorted(expected), "golden files missing or stale"
    for file_name, text in produced.items():
        assert text == expected[file_name], f"{example}/{name}/{file_name} differs"


def test_every_example_model_has_a_golden_case() -> None:
    for example, (path, names) in EXAMPLES.items():
        spec_text = (ROOT / path).read_text(encoding="utf-8")
        result = check_text(spec_text, file=str(ROOT / path), base=(ROOT / path).parent)
        spec = compile_spec(result)
        assert sorted(m.name for m in spec.models) == sorted(names), example
