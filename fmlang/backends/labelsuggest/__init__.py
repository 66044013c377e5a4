"""`fmc label suggest`: labeling functions synthesized from a small gold-labelled sample, in
the manner of Snuba (Varma and Ré, 2018) and Reef.

- `candidates.py`: primitives over the labelled text column (word and word-pair keywords,
  prefix regexes generalising them, a few shape regexes, word-count thresholds), each both
  as `.fm` source and as the IR the label-matrix lowering compiles, so that what is measured
  is exactly what the written function does (evaluated in DuckDB, not re-implemented);
- `select.py`: each primitive scored on the sample (accuracy, with a Wilson lower bound)
  and on every row of the labelled data (coverage), pruned against overfitting (minimum
  support, a lower bound above chance, agreement of the sample's two halves), then chosen
  greedily per class for new coverage, penalising overlap with what is already chosen;
- `source.py`: the chosen functions as a reviewable `.fm` file, each with its measured
  figures as a comment.

Everything is deterministic for a seed and needs no network and no model.
"""
