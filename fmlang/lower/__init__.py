"""Lowering: verified IR → the artifacts real tools read (SQL, PEFT configs, training
arguments, launcher configs, merge recipes, manifests). Pure and deterministic: no torch,
no DuckDB, no clock; sorted keys and paths relative to the build folder."""
