"""The functions fmc registers on its SQL engines, one definition for all of them.

What SQL cannot say (Unicode NFKC, Python's `str.split()` word count) is a vectorised Arrow
function: DuckDB calls it as an Arrow UDF (`engine.connect`), Spark as an `arrow_udf`
(`spark.spark_session`), so both engines compute exactly the same values. `strip_accents`
is built into DuckDB (utf8proc: canonical decomposition, marks removed, recomposed); Spark
gets the same definition here. NULL in, NULL out.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_MARKS = frozenset(("Mn", "Mc", "Me"))


def nfkc(values: Any) -> Any:
    import pyarrow.compute as pc

    return pc.utf8_normalize(values, form="NFKC")


# The ASCII characters `utf8_split_whitespace` (and Python's `str.split()`) split on.
ASCII_SPACE = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32)


def words(values: Any) -> Any:
    """Whitespace-separated words, as Python's `str.split()` counts them ("" and "  " have
    none): pyarrow's Unicode `utf8_split_whitespace` on the trimmed text, or for all-ASCII
    text (the common case, 10x faster) the same count from the bytes, without building the
    words: a word starts at a non-space byte that opens its string or follows a space, and
    each string's starts are summed (`np.add.reduceat` over the strings that have bytes)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type not in (pa.string(), pa.large_string()) or len(values) == 0:
        return _unicode_words(values)
    width = np.int32 if values.type == pa.string() else np.int64
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, width)[values.offset : values.offset + len(values) + 1]
    first = int(offsets[0])
    data = np.frombuffer(data_buffer, np.uint8)[first : int(offsets[-1])] if data_buffer else None
    counts = np.zeros(len(values), np.int64)
    if data is not None and data.size:
        if int(data.max()) >= 0x80:
            return _unicode_words(values)
        # not in ASCII_SPACE (9-13, 28-32): comparisons, several times faster than a lookup
        word = (data > 32) | (data < 9) | ((data > 13) & (data < 28))
        starts = np.empty_like(word)
        starts[0] = word[0]
        np.greater(word[1:], word[:-1], out=starts[1:])  # a word byte after a space
        opens = (offsets[:-1] - first).astype(np.int64)
        filled = np.diff(offsets) > 0  # strings with bytes; the others count 0
        starts[opens[filled]] = word[opens[filled]]  # a string's first byte follows nothing
        counts[filled] = np.add.reduceat(starts, opens[filled], dtype=np.int64)
    if values.null_count == 0:
        return pa.array(counts, pa.int64())
    mask = values.is_null().to_numpy(zero_copy_only=False)
    return pa.array(counts, pa.int64(), mask=mask)


def _unicode_words(values: Any) -> Any:
    """pyarrow splits "  a" into ["", "a"]: trimmed first, and "" has no words."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(values)
    counts = pc.list_value_length(pc.utf8_split_whitespace(trimmed)).cast(pa.int64())
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(0, pa.int64()), counts)


def strip_accents(values: Any) -> Any:
    import pyarrow as pa

    return pa.array([None if v is None else _strip(v) for v in values.to_pylist()], pa.string())


def _strip(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in _MARKS)
    return unicodedata.normalize("NFC", kept)
