"""`make_tiny_causal_lm`: the stdlib `tiny_causal_lm`, built offline and deterministically.

A randomly initialised `LlamaForCausalLM` with exactly the stdlib's settings (hidden 64,
2 layers, 4 heads, 2 KV heads, intermediate 128, vocabulary 1000, 256 positions, untied
embeddings) and a real byte-level BPE tokenizer trained on the small corpus below, saved so
that `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`
load it. The same seed writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VOCAB = 1000
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")

# A few hundred words of plain English so the BPE merges cover common words; the model's
# weights are random, so the text only shapes the tokenizer.
CORPUS = (
    "Check out my new video and subscribe to my channel for more music every week.",
    "This song is amazing, I have listened to it a million times and it never gets old.",
    "Who is still watching this in the summer? The chorus gives me chills every time.",
    "Please visit my page, I make covers of popular songs and need more views.",
    "The weather today is sunny with a light breeze from the west and no rain expected.",
    "A compiler reads source code, checks it, and lowers it into artifacts a machine runs.",
    "Training a model means showing it examples and nudging its weights to reduce the loss.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm roof.",
    "Question: what is the capital of France? Answer: the capital of France is Paris.",
    "Question: how many legs does a spider have? Answer: a spider has eight legs.",
    "Translate to French: good morning. Answer: bonjour.",
    "Summarize: the meeting moved to Tuesday because the room was booked on Monday.",
    "Customer support: my order arrived late and the box was damaged, can you help me?",
    "Thank you for reaching out. We are sorry about the delay and will send a replacement.",
    "Numbers like 1, 2, 3, 10, 42, 100 and 2024 appear in dates, prices and counts.",
    "Data is cleaned, deduplicated, split into train, valid and test sets, then labelled.",
    "Labeling functions vote spam or ham; a label model combines their noisy votes.",
    "The adapter has a small rank, so only a few parameters change during fine-tuning.",
    "Latency is measured at the declared batch size after a warm-up on the target machine.",
    "She opened the window, looked at the river and smiled at the boats passing by.",
    "He wrote a letter to his grandmother about the garden, the apples and the old tree.",
    "Good evening everyone, welcome to the show, tonight we have a very special guest.",
    "If you like this comment, give it a thumbs up so the artist can see it too.",
    "The system prints a diagnostic with the line, the column and a hint on how to fix it.",
)


def tiny_config() -> Any:
    """The `LlamaConfig` of stdlib `tiny_causal_lm` (LlamaConfig defaults otherwise)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with at most `VOCAB` entries, trained on `CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=256,
    )


def make_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """Write the tiny Llama and its tokenizer into `folder` (created); returns `folder`."""
    import torch
    from transformers import LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config())
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
