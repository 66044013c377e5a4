"""Near-duplicate removal in SQL, the same algorithm in DuckDB and Spark: MinHash
signatures, LSH banding, exact check.

A row is dropped when an earlier row (by source order) has a Jaccard similarity of at least
`threshold` over their sets of character 5-grams (lower-cased, the deduplicated columns
joined by a space). Candidate pairs come from locality-sensitive hashing: 32 MinHash values
in 8 bands of 4, so a pair at similarity 0.8 becomes a candidate with probability 0.985 and
one at 0.9 with 0.9998; every candidate is then checked exactly, so nothing below the
threshold is ever dropped.

The hash functions are portable, so that both engines drop exactly the same rows (`fmc run
--engine spark` equals DuckDB row for row): each shingle's 60-bit md5 prefix (the split's
`hash64`) modulo the Mersenne prime 2^31 - 1, then 32 universal hashes `(a·h + b) mod p` with
fixed coefficients (the scheme of Spark MLlib's `MinHashLSH`), in 64-bit integer arithmetic
that cannot overflow. Candidates share a band's four values themselves (no bucket hash that
could collide differently per engine).
"""

from __future__ import annotations

import random

from fmlang.lower.sql import DIALECTS

SHINGLE = 5
PERMUTATIONS = 32
BANDS = 8
ROWS_PER_BAND = PERMUTATIONS // BANDS
PRIME = 2_147_483_647  # 2^31 - 1: h < p and a < p, so a·h + b < 2^63

_RNG = random.Random(20240511)  # fixed: the coefficients are part of the algorithm
COEFFICIENTS = tuple((_RNG.randrange(1, PRIME), _RNG.randrange(0, PRIME)) for _ in range(32))


def near_dedupe_sql(
    source: str, name: str, columns: tuple[str, ...], threshold: float, dialect: str = "duckdb"
) -> tuple[str, ...]:
    """Statements that leave the `fm_row`s to drop in the table (Spark: cached view)
    `fm_near_dupes`."""
    if dialect == "spark":
        return _spark(source, columns, threshold)
    d = DIALECTS["duckdb"]
    cols = ", ".join(f"coalesce(CAST({d.quote(c)} AS VARCHAR), '')" for c in columns)
    text = f"lower(concat_ws(' ', {cols}))"
    grams = (
        f"list_distinct(list_transform(range(greatest(length(t) - {SHINGLE - 1}, 1)), "
        f"lambda i: substr(t, i + 1, {SHINGLE})))"
    )
    shingle_hash = d.hash64.format(x="s")
    a = "[" + ", ".join(str(a) for a, _ in COEFFICIENTS) + "]"
    b = "[" + ", ".join(str(b) for _, b in COEFFICIENTS) + "]"
    minhash = (
        f"list_transform(range({PERMUTATIONS}), lambda k: list_min(list_transform("
        f"list_transform(sh, lambda s: {shingle_hash} % {PRIME}), "
        f"lambda h: (h * {a}[k + 1] + {b}[k + 1]) % {PRIME})))"
    )
    band = f"list_slice(mh, b * {ROWS_PER_BAND} + 1, (b + 1) * {ROWS_PER_BAND})"
    return (
        f"CREATE OR REPLACE TEMP TABLE fm_near_sh AS SELECT fm_row, {grams} AS sh FROM "
        f"(SELECT fm_row, {text} AS t FROM {d.quote(source)})",
        f"CREATE OR REPLACE TEMP TABLE fm_near_sig AS SELECT fm_row, sh, {minhash} AS mh "
        "FROM fm_near_sh",
        f"CREATE OR REPLACE TEMP TABLE fm_near_band AS SELECT fm_row, b, {band} AS band "
        f"FROM fm_near_sig, range({BANDS}) AS r(b)",
        "CREATE OR REPLACE TEMP TABLE fm_near_dupes AS SELECT DISTINCT p.y AS fm_row FROM "
        "(SELECT DISTINCT a.fm_row AS x, c.fm_row AS y FROM fm_near_band a JOIN fm_near_band c "
        "ON a.b = c.b AND a.band = c.band AND a.fm_row < c.fm_row) AS p "
        "JOIN fm_near_sig sx ON sx.fm_row = p.x JOIN fm_near_sig sy ON sy.fm_row = p.y "
        f"WHERE len(list_intersect(sx.sh, sy.sh)) >= {threshold!r} * "
        "len(list_distinct(list_concat(sx.sh, sy.sh)))",
    )


def _spark(source: str, columns: tuple[str, ...], threshold: float) -> tuple[str, ...]:
    """The same statements in Spark SQL: cached temporary views instead of tables."""
    d = DIALECTS["spark"]
    cols = ", ".join(f"coalesce(CAST({d.quote(c)} AS STRING), '')" for c in columns)
    text = f"lower(concat_ws(' ', {cols}))"
    # DuckDB's range(n) ends before n, Spark's sequence(0, n) at n: the same start positions.
    grams = (
        f"array_distinct(transform(sequence(0, greatest(char_length(t) - {SHINGLE}, 0)), "
        f"i -> substr(t, i + 1, {SHINGLE})))"
    )
    shingle_hash = d.hash64.format(x="s")
    a = "array(" + ", ".join(f"{a}L" for a, _ in COEFFICIENTS) + ")"
    b = "array(" + ", ".join(f"{b}L" for _, b in COEFFICIENTS) + ")"
    minhash = (
        f"transform(sequence(0, {PERMUTATIONS - 1}), k -> array_min(transform("
        f"transform(sh, s -> {shingle_hash} % {PRIME}), "
        f"h -> (h * element_at({a}, k + 1) + element_at({b}, k + 1)) % {PRIME})))"
    )
    band = f"slice(mh, b * {ROWS_PER_BAND} + 1, {ROWS_PER_BAND})"

    def view(name: str, select: str) -> tuple[str, str]:
        return f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {select}", f"CACHE TABLE {name}"

    return (
        *view(
            "fm_near_sh",
            f"SELECT fm_row, {grams} AS sh FROM (SELECT fm_row, {text} AS t FROM "
            f"{d.quote(source)}) AS texts",
        ),
        *view("fm_near_sig", f"SELECT fm_row, sh, {minhash} AS mh FROM fm_near_sh"),
        *view(
            "fm_near_band",
            f"SELECT fm_row, b, {band} AS band FROM fm_near_sig "
            f"LATERAL VIEW explode(sequence(0, {BANDS - 1})) AS b",
        ),
        *view(
            "fm_near_dupes",
            "SELECT DISTINCT p.y AS fm_row FROM "
            "(SELECT DISTINCT a.fm_row AS x, c.fm_row AS y FROM fm_near_band a JOIN "
            "fm_near_band c ON a.b = c.b AND a.band = c.band AND a.fm_row < c.fm_row) AS p "
            "JOIN fm_near_sig sx ON sx.fm_row = p.x JOIN fm_near_sig sy ON sy.fm_row = p.y "
            f"WHERE size(array_intersect(sx.sh, sy.sh)) >= {threshold!r} * "
            "size(array_union(sx.sh, sy.sh))",
        ),
    )
