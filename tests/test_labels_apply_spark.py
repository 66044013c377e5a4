"""`fmc run --engine spark` equals DuckDB on a split that follows files and on labels applied
to other splits (`apply_to`): every output, row for row. One Spark session; skipped only
where Java is missing (as tests/test_spark_equality.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fmlang.backends.data.spark import _java
from tests.test_labels_apply import files_project
from tests.test_spark_equality import assert_same_outputs, both

pytestmark = pytest.mark.skipif(
    _java() is None, reason="Java is not installed: Spark needs Java 17+ (JAVA_HOME or PATH)"
)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fmlang.backends.data.spark import spark_session, stop_session

    session = spark_session(tmp_path_factory.mktemp("spark") / "spark.log", cores=2)
    yield session
    stop_session()


def test_file_splits_and_applied_labels_equal_in_both_engines(spark: Any, tmp_path: Path) -> None:
    duck, spark_build = both(files_project(tmp_path / "project"), tmp_path)
    assert (spark_build / "run/labels/l/w/test.parquet").exists()
    assert assert_same_outputs(duck, spark_build) >= 12
