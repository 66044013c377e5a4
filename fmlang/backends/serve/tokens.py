"""One token's text and bytes, as log-probabilities report them. Decoding a token alone
loses what a token holding part of a character holds (a byte-level tokenizer decodes it to
"" or U+FFFD), so the bytes come from the vocabulary itself where its encoding is known:
byte-level BPE (GPT-2's byte ↔ character table) and SentencePiece byte fallback
(`<0xAB>`); otherwise they are the UTF-8 of the decoded text."""

from __future__ import annotations

import re
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character each byte is written as, inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


class TokenTexts:
    """Each token id's (text, UTF-8 bytes), computed once per id."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"
        self._cache: dict[int, tuple[str, bytes]] = {}

    def get(self, token: int) -> tuple[str, bytes]:
        found = self._cache.get(token)
        if found is None:
            found = self._cache[token] = self._compute(token)
        return found

    def _compute(self, token: int) -> tuple[str, bytes]:
        decoded = self.tokenizer.decode([token], skip_special_tokens=False)
        text = decoded if isinstance(decoded, str) else "".join(decoded)
        raw = self._raw(token)
        if raw is None:
            return text, text.encode("utf-8", "surrogatepass")
        if not text or "\ufffd" in text:  # part of a character: show its bytes
            text = raw.decode("utf-8", "backslashreplace")
        return text, raw

    def _raw(self, token: int) -> bytes | None:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if not isinstance(piece, str):
            return None
        if match := BYTE_FALLBACK.match(piece):
            return bytes([int(match.group(1), 16)])
        if self.byte_level and token not in self.tokenizer.all_special_ids:
            table = _byte_level_table()
            if all(char in table for char in piece):
                return bytes(table[char] for char in piece)
        return None
