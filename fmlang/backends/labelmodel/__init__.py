"""The label model stage: majority vote, our Dawid–Skene label model fitted by EM without
gold labels, and Snorkel-style labeling-function analysis. Inputs everywhere are a label
matrix `L` (rows x labeling functions, ints in 0..k-1, -1 for abstain) and the class count
`k`. Numpy only: no torch."""

from fmlang.backends.labelmodel.analysis import LFStats, LFSummary, lf_summary
from fmlang.backends.labelmodel.majority import majority_proba, majority_vote
from fmlang.backends.labelmodel.matrix import ABSTAIN, TiePolicy
from fmlang.backends.labelmodel.model import LabelModel, fit_label_model

__all__ = [
    "ABSTAIN",
    "LFStats",
    "LFSummary",
    "LabelModel",
    "TiePolicy",
    "fit_label_model",
    "lf_summary",
    "majority_proba",
    "majority_vote",
]
