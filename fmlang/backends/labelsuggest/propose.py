"""Keywords proposed by a local generative model (`fmc label suggest --propose-with MODEL`).

The model (a folder, or a hub id already in the local cache: nothing is downloaded) reads a
prompt that names the classes with a few sample texts of each and writes, decoding greedily
(the same model and sample give the same words), a line per class: `spam: subscribe, check
out, free`. Each phrase of one or two words (ASCII letters and digits) becomes a keyword
candidate of the second round, where, like the words common in all rows, it is kept only
with an estimated precision of at least MIN_ESTIMATE: the model proposes, the data decides,
and the class a phrase was listed under is not trusted either. The file written is plain
`.fm`, so a rebuild never calls the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from fmlang.backends.labelsuggest.candidates import STOPWORDS, tokens

EXAMPLES_PER_CLASS = 3
TEXT_CHARS = 200
MAX_NEW_TOKENS = 96
MAX_PROMPT_TOKENS = 1024


def prompt(classes: Sequence[str], examples: dict[str, list[str]]) -> str:
    """The instruction, up to EXAMPLES_PER_CLASS sample texts per class (each cut at
    TEXT_CHARS), and the answer's format."""
    lines = ["Texts and their classes:"]
    for label in classes:
        for text in examples.get(label, [])[:EXAMPLES_PER_CLASS]:
            lines.append(f"{label}: {' '.join(text.split())[:TEXT_CHARS]}")
    lines += ["", "Keywords that mark each class, one line per class, as `class: word, word`:"]
    return "\n".join(lines) + "\n"


def parse(answer: str, classes: Sequence[str]) -> list[str]:
    """The phrases of the answer's `class: a, b` lines, in order, without repeats: one or two
    words of ASCII letters and digits, not a lone function word."""
    known = {label.lower() for label in classes}
    found: list[str] = []
    for line in answer.splitlines():
        head, colon, rest = line.partition(":")
        if not colon or head.strip(" `*-").lower() not in known:
            continue
        for part in rest.split(","):
            words = tokens(part)
            phrase = " ".join(words)
            if 1 <= len(words) <= 2 and phrase not in STOPWORDS and phrase not in found:
                found.append(phrase)
    return found


def generate(model: str, text: str) -> str:
    """The model's greedy continuation of `text` (at most MAX_NEW_TOKENS tokens), loaded
    from a folder or the local cache only. Raises OSError or ValueError when it cannot be
    loaded, or is not a generative model (an encoder such as MiniLM would load as a causal
    LM with newly initialised weights and write noise)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    names = getattr(AutoConfig.from_pretrained(model, local_files_only=True), "architectures", None)
    if not any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names or ()):
        found = ", ".join(names or ()) or "no architecture"
        raise ValueError(f"not a generative model (its config names {found})")
    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    network = AutoModelForCausalLM.from_pretrained(model, local_files_only=True)
    network.eval()  # type: ignore[no-untyped-call]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, -MAX_PROMPT_TOKENS:]
    pad = tokenizer.pad_token_id or tokenizer.eos_token_id
    with torch.no_grad():
        out = network.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                               pad_token_id=pad)  # fmt: skip
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
