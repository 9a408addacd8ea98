"""Vietnamese-aware text helpers: accent folding, phrase matching, one-line summaries."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^0-9a-z]+")


def fold(text: str) -> str:
    """Lower-case, strip diacritics (đ → d), collapse punctuation to single spaces.

    Vietnamese is often typed without accents ("troi nong qua"), so patterns match on the folded form.
    """
    decomposed = unicodedata.normalize("NFD", text.lower().replace("đ", "d").replace("Đ", "d"))
    bare = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return _NON_WORD.sub(" ", bare).strip()


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-case NFC words, accents kept."""
    return _WORD.findall(unicodedata.normalize("NFC", text.lower()))


class PhraseMatcher:
    """Whole-word phrase matching, Vietnamese typed with or without diacritics.

    A word typed with accents must match exactly ("nông" is not "nóng"); a word typed without any accents
    matches the pattern word's bare form ("nong" is "nóng"). Phrases are prepared once; each text is split
    and folded once, however many phrases are looked for.
    """

    def __init__(self, phrases: Iterable[str], *, bare_matches_accented: bool = True) -> None:
        self.phrases = [
            (tuple(parts), tuple(fold(part) for part in parts)) for parts in (words(p) for p in phrases) if parts
        ]
        # strict matchers (the profanity list) want "lon" (a can) not to match "lồn"
        self.bare_matches_accented = bare_matches_accented
        # phrases by the bare form of their first word: a text is only checked against phrases that can start
        # at one of its words
        self._by_first: dict[str, list[int]] = {}
        for index, (_, folded) in enumerate(self.phrases):
            self._by_first.setdefault(folded[0], []).append(index)

    def found(self, text: str) -> list[str]:
        """The phrases found in `text` (words joined by spaces), in the order they were given."""
        exact = words(text)
        folded_words = [fold(word) for word in exact]
        bare = [
            word if self.bare_matches_accented and folded_words[i] == word else None for i, word in enumerate(exact)
        ]
        hit: set[int] = set()
        for start, first in enumerate(folded_words):
            for index in self._by_first.get(first, ()):
                if index in hit:
                    continue
                parts, folded = self.phrases[index]
                size = len(parts)
                if start + size <= len(exact) and all(
                    exact[start + i] == parts[i] or bare[start + i] == folded[i] for i in range(size)
                ):
                    hit.add(index)
        return [" ".join(self.phrases[index][0]) for index in sorted(hit)]

    def matches(self, *texts: str) -> bool:
        return any(self.found(text) for text in texts)

    def count(self, text: str) -> int:
        return len(self.found(text))


def one_line(text: str) -> str:
    return " ".join(text.split())


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters, cut at a word boundary with an ellipsis."""
    line = one_line(text)
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,.;:-") + "…"


def looks_vietnamese(text: str) -> bool:
    folded = unicodedata.normalize("NFC", text.lower())
    return any(ch in folded for ch in "ăâđêôơưàáạảãèéẹẻẽìíịỉĩòóọỏõùúụủũỳýỵỷỹ") or bool(
        set(fold(text).split()) & _VIETNAMESE_WORDS
    )


_VIETNAMESE_WORDS = frozenset(
    "khong qua troi nong ao dam mau cho toi minh ban nay kia duoc nhe roi voi va la cua co goi y tu van".split()
)
