"""Backends: execute the lowered artifacts (DuckDB data stages, the label model, PEFT
training and merging, serving). Heavy imports live here and only here."""
