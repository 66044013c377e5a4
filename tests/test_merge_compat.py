"""Merge compatibility is decided before anything trains: `fmc check` refuses exactly the
merges the merge executor (`fmlang.backends.merge.check_parents`) would refuse after both
parents trained, judged here on the adapter configs the build writes for them. No torch:
the executor's checks read `adapter_config.json` contents only."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from fmlang.api import check_text, compile_spec
from fmlang.backends.merge import ParentAdapter, check_parents
from fmlang.check.merge_parents import DEFAULT_RANK
from fmlang.diagnostics import Severity
from fmlang.errors import StageError
from fmlang.lower import adapters
from fmlang.lower.adapters import lower_adapter

MERGE_CODES = {"FM0342", "FM0343", "FM0344", "FM0345", "FM0346"}
HEADER = """\
import std.models.{tiny_causal_lm, qwen2_5_0_5b, minilm_l6}

dataset notes {
  source csv("notes.csv")
  schema { id: string @id; body: text }
}

labels kinds on notes {
  classes [a, b]
  lf short: length(body) < 5 -> a
}
"""
QV, QK = "targets = [q_proj, v_proj]", "targets = [q_proj, k_proj]"
BERT = "targets = [query, value]"
# name → (base, task, adapter): every kind of parent a merge can meet
PARENTS = {
    "lora_qv_4": ("tiny_causal_lm", "generate", f"lora(rank = 4, {QV})"),
    "lora_qv_8": ("tiny_causal_lm", "generate", f"lora(rank = 8, {QV})"),
    "lora_qv": ("tiny_causal_lm", "generate", "lora(targets = [v_proj, q_proj])"),
    "lora_qk_4": ("tiny_causal_lm", "generate", f"lora(rank = 4, {QK})"),
    "dora_qv_4": ("tiny_causal_lm", "generate", f"dora(rank = 4, {QV})"),
    "ia3_qv": ("tiny_causal_lm", "generate", f"ia3({QV})"),
    "prefix": ("tiny_causal_lm", "generate", "prefix(virtual_tokens = 4)"),
    "full": ("tiny_causal_lm", "generate", "full"),
    "qwen_qv_4": ("qwen2_5_0_5b", "generate", f"lora(rank = 4, {QV})"),
    "cls_1": ("minilm_l6", "classify(kinds)", f"lora(rank = 4, {BERT})"),
    "cls_2": ("minilm_l6", "classify(kinds)", f"lora(rank = 4, {BERT})"),
}
PAIRS = [
    (a, b, method)
    for a, b in itertools.combinations(PARENTS, 2)
    for method in ("linear", "cat")
    if not (a.startswith("cls") ^ b.startswith("cls")) or method == "linear"
]


def _spec(names: tuple[str, ...], merge: str = "") -> str:
    models = "".join(
        f"model {n} {{ base {base}; task {task}; adapter {adapter} }}\n"
        for n, (base, task, adapter) in ((n, PARENTS[n]) for n in names)
    )
    return HEADER + models + merge


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any] | None]:
    """Every parent's adapter_config.json as the build writes it (None: no adapter)."""
    folder = tmp_path_factory.mktemp("parents")
    result = check_text(_spec(tuple(PARENTS)), str(folder / "p.fm"), folder)
    assert result.ok, [d.message for d in result.diagnostics if d.severity is Severity.ERROR]
    spec = compile_spec(result)
    return {m.name: lower_adapter(spec, m, {}) for m in spec.models}


def _static_codes(a: str, b: str, method: str) -> set[str]:
    merge = f"merge g {{ models [{a}, {b}]; method {method} }}\n"
    result = check_text(_spec((a, b), merge), "m.fm", Path("."))
    return {d.code for d in result.diagnostics if d.severity is Severity.ERROR}


def _executor_refuses(
    configs: dict[str, dict[str, Any] | None], a: str, b: str, method: str
) -> bool:
    if configs[a] is None or configs[b] is None:
        return True  # nothing to read: the executor's FM0845
    recipe = {"merge": "g", "method": method, "parents": [{"model": a}, {"model": b}]}
    parents = [ParentAdapter(n, Path(n), dict(configs[n] or {})) for n in (a, b)]
    try:
        check_parents(recipe, parents)
    except StageError:
        return True
    return False


@pytest.mark.parametrize(("a", "b", "method"), PAIRS, ids=lambda v: str(v))
def test_check_refuses_exactly_what_the_executor_refuses(
    configs: dict[str, dict[str, Any] | None], a: str, b: str, method: str
) -> None:
    static = _static_codes(a, b, method)
    assert static <= MERGE_CODES, static
    assert bool(static) == _executor_refuses(configs, a, b, method), static


def test_every_kind_of_refusal_is_exercised(configs: dict[str, dict[str, Any] | None]) -> None:
    seen = set().union(*(_static_codes(a, b, m) for a, b, m in PAIRS))
    assert {"FM0342", "FM0343", "FM0344", "FM0345", "FM0346"} <= seen


def test_tasks_are_stricter_than_the_executor() -> None:
    """Different tasks are refused although peft would merge the updates: the merged adapter
    would have no one task to be loaded, evaluated and served for."""
    merge = "merge g { models [writer, embedder]; method linear }\n"
    text = _spec(("lora_qv_4",), merge).replace("model lora_qv_4", "model writer") + (
        "model embedder { base tiny_causal_lm; task embed; "
        "adapter lora(rank = 4, targets = [q_proj, v_proj]) }\n"
    )
    result = check_text(text, "t.fm", Path("."))
    assert [d.code for d in result.diagnostics if d.severity is Severity.ERROR] == ["FM0346"]


def test_a_refusal_points_at_the_merge_and_labels_both_settings() -> None:
    merge = "merge g {\n  models [lora_qv_4, lora_qk_4]\n  method linear\n}\n"
    text = _spec(("lora_qv_4", "lora_qk_4"), merge)
    (found,) = [d for d in check_text(text, "t.fm", Path(".")).diagnostics if d.code == "FM0344"]
    lines = text.splitlines()
    primary = found.primary_span
    assert primary is not None and "models [lora_qv_4, lora_qk_4]" in lines[primary.line - 1]
    related = [label for label in found.labels if not label.primary]
    assert [lines[label.span.line - 1].split("{")[0] for label in related] == [
        "model lora_qk_4 ",
        "model lora_qv_4 ",
    ]
    assert all("targets" in label.text for label in related)
    assert found.help and "targets = [q_proj, v_proj]" in found.help


AUTO_RANK = """\
import std.models.tiny_causal_lm

model chosen {
  base tiny_causal_lm; task generate
  adapter lora(rank = auto in [4, 8], targets = [q_proj, v_proj])
  grant deploy to "team:ml"
}

model fixed {
  base tiny_causal_lm; task generate
  adapter lora(rank = 8, targets = [q_proj, v_proj])
  grant deploy to "team:ml"
}

merge g { models [chosen, fixed]; method linear }
"""


def test_an_auto_rank_is_left_to_the_verifier() -> None:
    """The checker does not guess a solver's choice; the verifier ties the rank knobs."""
    result = check_text(AUTO_RANK, "t.fm", Path("."), verify=True)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.report is not None and result.report.knobs["chosen.rank"] == 8


def test_the_omitted_rank_is_the_lowering_default() -> None:
    assert DEFAULT_RANK == adapters.DEFAULT_RANK
