"""Training and evaluation executor: transformers + peft (+ opacus for DP-SGD).

`job.TrainJob` says what to train (written as JSON, read by `worker.py`), `loader` loads the
base model and tokenizer offline, `trainer.train` runs a seeded, resumable Trainer (or, for
a `dp { … }` job, the DP-SGD loop of `dp` with `privacy`'s accountant and `dp_state`'s
checkpoints), `evaluate.evaluate` and `evaluate.measure_latency` measure the result, and
`tiny` builds the small random Llama the tests train. Heavy imports stay inside the
submodules.
"""
