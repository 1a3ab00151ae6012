"""The character tokenizer every token task uses, and its two reserved ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

PAD, EOS = 0, 1  # never attended to / ends a completion


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Ids 0 and 1 are PAD and EOS; each character of `chars` follows, in order."""

    chars: str

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"tokenizer characters repeat: {self.chars!r}")

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.chars))
        if unknown:
            raise ValueError(f"characters {unknown} of {text!r} are not in the vocabulary "
                             f"{self.chars!r}")
        return [self.chars.index(c) + 2 for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """The text up to the first EOS, PADs skipped."""
        text = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i == PAD:
                continue
            if not 2 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
            text.append(self.chars[i - 2])
        return "".join(text)
