"""Token ids of millions of SFT texts that repeat the same pieces, tokenising each repeated piece once.

A tokenizer first cuts a text at its added tokens (the SID tokens: `<a_12>`), then tokenises each stretch of text
between them on its own (transformers' / tokenizers' AddedVocabulary). SFT texts are mostly such pieces: a SID
history prompt is the fixed preamble, SID tokens and ", " between them; an answer is a SID or one of the catalogue's
titles. So `PieceTokenizer` cuts the same way and keeps the ids of every piece that repeats within a batch of texts
in a memo (each tokenised once); pieces seen once (a title-history prompt's text) are tokenised in the batch and not
kept, so the memo holds ~the distinct titles and template stretches, not the texts.

The cut is the tokenizer's only when its added tokens match anywhere (no lstrip / rstrip / single_word) and no
normalizer changes the text around them; `matches_tokenizer` checks a seeded sample of each task's texts against
the tokenizer itself and the caller falls back to it when they differ (test_piece_tokens.py checks both).
"""
from __future__ import annotations

import itertools
import random
import re
from collections import Counter

CHECKED = 200  # texts per call of matches_tokenizer


BRACKETED = r"<[^<>\s]+>"  # the shape of SID tokens (<a_12>) and of most special tokens (<|endoftext|>)


class PieceTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.added = tokenizer.get_added_vocab()  # token text -> id
        # One regex of every added token (leftmost, then longest: the tokenizer's own order) is slow in Python's re
        # with thousands of SID tokens; bracketed ones are found by their shape (a match that is no added token
        # stays text), the few others by name.
        others = sorted((t for t in self.added if not re.fullmatch(BRACKETED, t)), key=len, reverse=True)
        self.cut = re.compile("(" + "|".join([*map(re.escape, others), BRACKETED]) + ")") if self.added else None
        self.memo: dict[str, list[int]] = {}

    def plain(self, texts: list[str]) -> list[list[int]]:
        """The tokenizer's own ids (the reference, and the fallback where the cut is not the tokenizer's)."""
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, as tokenizer(texts, add_special_tokens=False)["input_ids"]."""
        if self.cut is None:
            return self.plain(texts)
        pieces = [self._pieces(text) for text in texts]
        counts = Counter(p for ps in pieces for p in ps if p not in self.added and p not in self.memo)
        repeated = [p for p, n in counts.items() if n > 1]  # memoised: template stretches, separators, titles
        self.memo.update(zip(repeated, self.plain(repeated)))
        once = [p for p, n in counts.items() if n == 1]  # a title-history prompt's text: tokenised, not kept
        once_ids = dict(zip(once, self.plain(once)))
        added, memo = self.added, self.memo
        return [list(itertools.chain.from_iterable(
            [added[p]] if p in added else memo[p] if p in memo else once_ids[p] for p in ps)) for ps in pieces]

    def _pieces(self, text: str) -> list[str]:
        """Added tokens and the stretches of text between them (a bracketed match that is no added token is text)."""
        pieces, stretch = [], ""
        for i, part in enumerate(self.cut.split(text)):  # text, match, text, match, ..., text
            if i % 2 and part in self.added:
                if stretch:
                    pieces.append(stretch)
                pieces.append(part)
                stretch = ""
            else:
                stretch += part
        return [*pieces, stretch] if stretch else pieces

    def matches_tokenizer(self, texts: list[str], seed: int = 0) -> bool:
        """The same ids as the tokenizer on a seeded sample of `texts`."""
        sample = random.Random(seed).sample(texts, min(CHECKED, len(texts)))
        return self(sample) == self.plain(sample)
