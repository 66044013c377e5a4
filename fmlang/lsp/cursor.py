"""Where the cursor is, read from the text alone (it is usually mid-edit and does not parse):
the blocks around it, the calls it is inside, and the statement typed so far."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fmlang.syntax.incremental import chunks

_WORD_BEFORE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")
_HEAD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")
_OPEN = {"{": "}", "(": ")", "[": "]"}


@dataclass
class Cursor:
    blocks: list[str] = field(default_factory=list)  # `{` headers, outermost first
    calls: list[str] = field(default_factory=list)  # heads of the open `(`, innermost last
    statement: str = ""  # the statement before the cursor, at its own nesting
    argument: str = ""  # inside a call: the argument before the cursor
    word: str = ""  # the name (dots included) right before the cursor
    quiet: bool = False  # inside a string or a comment: nothing to complete

    @property
    def kind(self) -> str:
        """The top-level item the cursor is in (`model`, `dataset`, ...), or `` at top level."""
        return self.blocks[0].split()[0] if self.blocks and self.blocks[0].split() else ""

    @property
    def item_name(self) -> str:
        words = self.blocks[0].split() if self.blocks else []
        return words[1] if len(words) > 1 else ""

    @property
    def nested(self) -> list[str]:
        return [h.split()[0] if h.split() else "" for h in self.blocks[1:]]


def cursor_at(text: str, offset: int) -> Cursor:
    start = 0
    for chunk in chunks(text[:offset]):
        start = chunk.offset  # scanning from the item the cursor is in is enough
    scan = _Scan(text, start)
    scan.run(offset)
    return scan.cursor(offset)


@dataclass
class _Frame:
    bracket: str
    header: str  # a `{` block's header, a `(` call's head
    outer_start: int  # where the statement around a `{` block began
    argument_start: int  # inside a `(`: where the current argument began


class _Scan:
    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.frames: list[_Frame] = []
        self.statement_start = start
        self.index = start
        self.quiet = False

    def run(self, offset: int) -> None:
        while self.index < offset:
            char = self.text[self.index]
            if char == "#":
                self.skip_comment(offset)
            elif char == '"':
                self.skip_string(offset)
            else:
                self.step(char)
                self.index += 1

    def skip_comment(self, offset: int) -> None:
        end = self.text.find("\n", self.index)
        end = len(self.text) if end < 0 else end
        self.quiet = end >= offset
        self.index = end

    def skip_string(self, offset: int) -> None:
        i = self.index + 1
        while i < len(self.text) and self.text[i] not in '"\n':
            i += 2 if self.text[i] == "\\" else 1
        self.quiet = i >= offset
        self.index = i + 1

    def step(self, char: str) -> None:
        top = self.frames[-1] if self.frames else None
        if char in _OPEN:
            self.open(char)
        elif char in "})]":
            self.close()
        elif char in ";\n," and (top is None or top.bracket == "{"):
            self.statement_start = self.index + 1  # a statement ends at `;`, `,` or a newline
        elif char == "," and top is not None and top.bracket == "(":
            top.argument_start = self.index + 1

    def open(self, char: str) -> None:
        before = self.text[self.statement_start : self.index]
        if char == "{":
            self.frames.append(_Frame(char, " ".join(before.split()), self.statement_start, 0))
            self.statement_start = self.index + 1
            return
        head = _HEAD_BEFORE.search(before) if char == "(" else None
        header = head.group(1) if head else ""
        self.frames.append(_Frame(char, header, self.statement_start, self.index + 1))

    def close(self) -> None:
        if self.frames and self.frames.pop().bracket == "{":
            self.statement_start = self.index + 1

    def cursor(self, offset: int) -> Cursor:
        blocks = [f.header for f in self.frames if f.bracket == "{"]
        last_block = max((i for i, f in enumerate(self.frames) if f.bracket == "{"), default=-1)
        calls = [f for f in self.frames[last_block + 1 :] if f.bracket == "("]
        argument = self.text[calls[-1].argument_start : offset] if calls else ""
        word = _WORD_BEFORE.search(self.text[max(0, offset - 200) : offset])
        return Cursor(
            blocks=blocks,
            calls=[f.header for f in calls],
            statement=self.text[self.statement_start : offset].lstrip(),
            argument=argument.lstrip(),
            word=word.group(0) if word else "",
            quiet=self.quiet,
        )
