"""Near-duplicate removal in DuckDB SQL: MinHash signatures, LSH banding, exact check.

A row is dropped when an earlier row (by source order) has a Jaccard similarity of at least
`threshold` over their sets of character 5-grams (lower-cased, the deduplicated columns
joined by a space). Candidate pairs come from locality-sensitive hashing: 32 MinHash values
in 8 bands of 4, so a pair at similarity 0.8 becomes a candidate with probability 0.985 and
one at 0.9 with 0.9998; every candidate is then checked exactly, so nothing below the
threshold is ever dropped.
"""

from __future__ import annotations

SHINGLE = 5
PERMUTATIONS = 32
BANDS = 8
ROWS_PER_BAND = PERMUTATIONS // BANDS


def near_dedupe_sql(
    source: str, name: str, columns: tuple[str, ...], threshold: float
) -> tuple[str, ...]:
    """Statements that leave the `fm_row`s to drop in the temp table `fm_near_dupes`."""
    cols = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '')" for c in columns)
    text = f"lower(concat_ws(' ', {cols}))"
    grams = (
        f"list_distinct(list_transform(range(greatest(length(t) - {SHINGLE - 1}, 1)), "
        f"lambda i: substr(t, i + 1, {SHINGLE})))"
    )
    minhash = (
        f"list_transform(range({PERMUTATIONS}), "
        "lambda k: list_min(list_transform(sh, lambda s: hash(s, k))))"
    )
    band = f"hash(b, list_slice(mh, b * {ROWS_PER_BAND} + 1, (b + 1) * {ROWS_PER_BAND}))"
    return (
        f"CREATE OR REPLACE TEMP TABLE fm_near_sh AS SELECT fm_row, {grams} AS sh FROM "
        f'(SELECT fm_row, {text} AS t FROM "{source}")',
        f"CREATE OR REPLACE TEMP TABLE fm_near_sig AS SELECT fm_row, sh, {minhash} AS mh "
        "FROM fm_near_sh",
        f"CREATE OR REPLACE TEMP TABLE fm_near_band AS SELECT fm_row, {band} AS bucket "
        f"FROM fm_near_sig, range({BANDS}) AS r(b)",
        "CREATE OR REPLACE TEMP TABLE fm_near_dupes AS SELECT DISTINCT p.y AS fm_row FROM "
        "(SELECT DISTINCT a.fm_row AS x, c.fm_row AS y FROM fm_near_band a JOIN fm_near_band c "
        "ON a.bucket = c.bucket AND a.fm_row < c.fm_row) AS p "
        "JOIN fm_near_sig sx ON sx.fm_row = p.x JOIN fm_near_sig sy ON sy.fm_row = p.y "
        f"WHERE len(list_intersect(sx.sh, sy.sh)) >= {threshold!r} * "
        "len(list_distinct(list_concat(sx.sh, sy.sh)))",
    )
