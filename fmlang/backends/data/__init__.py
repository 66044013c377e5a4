"""The data stages: DuckDB execution of the lowered pipelines and label queries, access
checks against the spec's grants, and the hash-chained audit log."""
