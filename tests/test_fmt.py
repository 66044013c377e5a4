"""`fmc fmt`: canonical style, comments kept, idempotent, meaning preserved."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fmlang.fmt import format_expr, format_module, format_text
from fmlang.syntax import ast
from fmlang.syntax.parser import parse
from tests.strategies import expressions, specs

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = sorted(ROOT.glob("stdlib/**/*.fm")) + sorted(ROOT.glob("examples/**/*.fm"))


def fmt(text: str) -> str:
    result = format_text(textwrap.dedent(text))
    assert result.text is not None, [d.message for d in result.diagnostics]
    return result.text


def comment_texts(text: str) -> list[str]:
    module = parse(text).module
    assert module is not None
    return [c.text.rstrip() for c in module.comments]


def assert_formats_cleanly(text: str) -> str:
    """Parses back to the same AST, keeps every comment in order, and is a fixed point."""
    before = parse(text)
    assert before.module is not None, [d.message for d in before.diagnostics]
    formatted = format_module(before.module)
    after = parse(formatted)
    assert after.module is not None, (formatted, [d.message for d in after.diagnostics])
    assert after.module == before.module, formatted
    assert comment_texts(formatted) == comment_texts(text), formatted
    assert format_text(formatted).text == formatted
    return formatted


def expr_of(text: str) -> ast.Expr:
    module = parse(f"model m {{ x = {text} }}").module
    assert module is not None
    block = module.items[0]
    assert isinstance(block, ast.Block) and isinstance(block.body[0], ast.Setting)
    return block.body[0].value


# ---- golden style -----------------------------------------------------------------


def test_top_level_settings_have_no_equals_and_nested_ones_do() -> None:
    source = """
        model spam_filter { base = minilm_l6; task classify(spam)
          adapter   lora(rank=auto in [4,8,16],targets=[query,value])
          train { epochs 3, lr=3e-4, batch = auto }

          eval {
            on = [test]; metrics = [accuracy, f1]
          }
        }
    """
    assert fmt(source) == textwrap.dedent("""\
        model spam_filter {
          base    minilm_l6
          task    classify(spam)
          adapter lora(rank = auto in [4, 8, 16], targets = [query, value])
          train { epochs = 3, lr = 3e-4, batch = auto }

          eval {
            on      = [test]
            metrics = [accuracy, f1]
          }
        }
    """)


def test_nested_blocks_stay_on_one_line_only_when_written_so_and_short() -> None:
    image = "registry.example.com/trust-and-safety/serving/comment-filter"
    source = f"""
        deploy d {{
          kserve {{ replicas = 1..4, hardware = h100, image = "{image}" }}
          local {{ server {{ port = 8080 }} }}
          empty {{}}
          written {{
            on = two_lines }}
        }}
    """
    assert fmt(source) == textwrap.dedent(f"""\
        deploy d {{
          kserve {{
            replicas = 1..4
            hardware = h100
            image    = "{image}"
          }}
          local {{
            server {{ port = 8080 }}
          }}
          empty {{}}
          written {{
            on = two_lines
          }}
        }}
    """)


def test_long_calls_and_lists_open_up_one_item_per_line() -> None:
    source = """
        model m {
          adapter lora(rank = auto in [8, 16, 32], alpha = 32, dropout = 0.05,
                       targets = [q_proj, k_proj, v_proj])
          short f(x)
        }
    """
    assert fmt(source) == textwrap.dedent("""\
        model m {
          adapter lora(
            rank = auto in [8, 16, 32],
            alpha = 32,
            dropout = 0.05,
            targets = [q_proj, k_proj, v_proj],
          )
          short   f(x)
        }
    """)


def test_one_blank_line_between_statements_is_kept() -> None:
    source = "model m {\n\n  a 1\n\n\n\n  # about b\n\n  b 2\n  c 3\n\n}\n"
    assert fmt(source) == "model m {\n  a 1\n\n  # about b\n\n  b 2\n  c 3\n}\n"


def test_dataset_schema_is_aligned_and_clean_has_one_rule_per_line() -> None:
    source = """
        dataset comments {
          source csv("data/*.csv")
          schema { COMMENT_ID: string @id, AUTHOR: string @pii
                   CLASS: label[ham,spam] @gold; video: category @protected = source_file }
          clean { dedupe CONTENT near 0.9; drop where length(CONTENT) < 3; keep where ok
                  redact pii in CONTENT; normalize CONTENT: lower, nfc; drop AUTHOR, DATE }
          split { train 80%
                  dev 10%; test 10%
                  by hash(COMMENT_ID) }
          grant read, write to alice, "ml team"
        }
    """
    assert fmt(source) == textwrap.dedent("""\
        dataset comments {
          source csv("data/*.csv")
          schema {
            COMMENT_ID: string @id
            AUTHOR:     string @pii
            CLASS:      label[ham, spam] @gold
            video:      category @protected = source_file
          }
          clean {
            dedupe CONTENT near 0.9
            drop where length(CONTENT) < 3
            keep where ok
            redact pii in CONTENT
            normalize CONTENT: lower, nfc
            drop AUTHOR, DATE
          }
          split { train 80%, dev 10%, test 10% by hash(COMMENT_ID) }
          grant read, write to alice, "ml team"
        }
    """)


def test_labeling_functions_are_aligned() -> None:
    source = """
        labels spam on comments.train {
          classes [ham, spam]
          lf check_out: CONTENT ~ /check (it )?out/i -> spam
          lf subscribe: CONTENT contains "subscribe" -> spam
          lf short: words(CONTENT) < 5 -> ham
          lf abstains: false
          model label_model(epochs = 100)
        }
    """
    assert fmt(source) == textwrap.dedent("""\
        labels spam on comments.train {
          classes [ham, spam]
          lf check_out: CONTENT ~ /check (it )?out/i -> spam
          lf subscribe: CONTENT contains "subscribe" -> spam
          lf short:     words(CONTENT) < 5           -> ham
          lf abstains:  false
          model label_model(epochs = 100)
        }
    """)


def test_imports_and_lets_are_grouped_and_declarations_separated() -> None:
    source = """
        import std.models.minilm_l6


        import std.hardware.{ cpu_2core,h100, }
        import "shared/data.fm"
        let floor = 0.9
        let tags = ["a", "b",]
        model m {}
        constraints m { accuracy >= floor }
    """
    assert fmt(source) == textwrap.dedent("""\
        import std.models.minilm_l6
        import std.hardware.{cpu_2core, h100}
        import "shared/data.fm"

        let floor = 0.9
        let tags = ["a", "b"]

        model m {}

        constraints m {
          accuracy >= floor
        }
    """)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("(a + b) * c", "(a + b) * c"),
        ("a + (b + c)", "a + (b + c)"),
        ("((a + b)) + c", "a + b + c"),
        ("(a < b) == c", "(a < b) == c"),
        ("not (a and b) or c", "not (a and b) or c"),
        ("(not a) == b", "(not a) == b"),
        ("a or (b and c)", "a or b and c"),
        ("(a or b) and c", "(a or b) and c"),
        ("-(a.b)", "-a.b"),
        ("(-a).b", "(-a).b"),
        ("- -1", "- -1"),
        ("(f)(x)(y)", "f(x)(y)"),
        ("(a..b)..c", "(a..b)..c"),
        ("1...5", "1 .. .5"),
        ("(auto) in x", "(auto) in x"),
        ("(auto in x) + y", "(auto in x) + y"),
        ("(auto in x).y", "(auto in x).y"),
        ("auto in (x < y)", "auto in (x < y)"),
        ("a + (auto in x)", "a + auto in x"),
        ("(a + auto) in x", "(a + auto) in x"),
        ("(auto in x)..y", "(auto in x)..y"),
        ("auto in (1..4)", "auto in 1..4"),
        ("auto in 1 .. 4 + n", "auto in 1..4 + n"),
        ("(auto in 1..4)..8", "auto in 1..4..8"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - -c", "a - b - -c"),
        ("a / (b * c) / d", "a / (b * c) / d"),
        ("f(k=v,  w)", "f(k = v, w)"),
        ('"q\\"uote \\\\ tab\\t nl\\n odd\\q"', '"q\\"uote \\\\ tab\\t nl\\n odd\\\\q"'),
        ("/a\\/b+/ix", "/a\\/b+/ix"),
        ("[1_000, 3e-4, .5, 2GiB, 3.35TB/s, 5%]", "[1_000, 3e-4, .5, 2GiB, 3.35TB/s, 5%]"),
        ("3.e5", "3.e5"),
    ],
)
def test_expressions_use_minimal_parentheses(source: str, expected: str) -> None:
    tree = expr_of(source)
    assert format_expr(tree) == expected
    assert expr_of(expected) == tree


def test_constraints_that_would_continue_the_previous_one_are_separated() -> None:
    source = "constraints m { f; (a + b) * c <= d; c; -d <= e; g; .5 < h }"
    assert fmt(source) == textwrap.dedent("""\
        constraints m {
          f;
          (a + b) * c <= d
          c;
          -d <= e
          g;
          .5 < h
        }
    """)
    assert_formats_cleanly(source)


def test_unparsable_input_gives_diagnostics_and_no_text() -> None:
    result = format_text("model m {\n  base = \n", "bad.fm")
    assert result.text is None and not result.ok
    assert result.diagnostics and result.diagnostics[0].labels[0].span.file == "bad.fm"


def test_long_chains_and_deep_nesting_still_format() -> None:
    chain = "model m { x " + " - ".join(["a"] * 5000) + " }"
    assert fmt(chain) == "model m {\n  x " + " - ".join(["a"] * 5000) + "\n}\n"
    assert format_text("model m { x " + "[" * 200 + "]" * 200 + " }").ok


def test_windows_line_endings_are_normalized() -> None:
    source = "model m {\r\n  a 1  # one\r\n\r\n  b 2\r\n}\r\n"
    assert fmt(source) == "model m {\n  a 1  # one\n\n  b 2\n}\n"


def test_formatting_reports_whether_anything_changed() -> None:
    assert format_text("model m {\n  base x\n}\n").changed is False
    assert format_text("model m { base x }").changed is True
    assert format_text("").text == ""


# ---- comments -----------------------------------------------------------------------


def test_comments_stay_where_they_were() -> None:
    source = """\
        # spam filter, owned by the trust team
        import std.models.minilm_l6  # the encoder

        # the data
        dataset comments { # header
          # before source
          source csv("a.csv")  # trailing
          split { train 80% # most
            test 20% }
          # before the closing brace
        }  # after the block
        model m {
          train { epochs = 3 }  # one line still
          adapter lora(
            rank = 8,  # inside an expression
          )
        }

        # end of file
    """
    assert fmt(source) == textwrap.dedent("""\
        # spam filter, owned by the trust team
        import std.models.minilm_l6  # the encoder

        # the data
        dataset comments {  # header
          # before source
          source csv("a.csv")  # trailing
          split {
            train 80%  # most
            test 20%
          }
          # before the closing brace
        }  # after the block

        model m {
          train { epochs = 3 }  # one line still
          # inside an expression
          adapter lora(rank = 8)
        }

        # end of file
    """)
    assert_formats_cleanly(textwrap.dedent(source))


def test_trailing_comments_of_neighbouring_lines_line_up() -> None:
    source = """
        dataset d {
          schema {
            ID: string @id  # one
            AUTHOR: string @pii # two
            CLASS: label[ham, spam] @gold   # three
            video: category
          }
        }
    """
    assert fmt(source) == textwrap.dedent("""\
        dataset d {
          schema {
            ID:     string @id              # one
            AUTHOR: string @pii             # two
            CLASS:  label[ham, spam] @gold  # three
            video:  category
          }
        }
    """)


def test_a_comment_only_file_keeps_its_comments() -> None:
    assert fmt("# one\n\n\n# two   \n") == "# one\n\n# two\n"


# ---- every spec in the repository --------------------------------------------------


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_specs_format_cleanly(path: Path) -> None:
    assert_formats_cleanly(path.read_text(encoding="utf-8"))


# ---- properties ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_specs_format_cleanly(text: str) -> None:
    assert_formats_cleanly(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(12, comments=True))
def test_random_expressions_print_back_to_the_same_tree(text: str) -> None:
    tree = expr_of(text)
    assert expr_of(format_expr(tree)) == tree
