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

    def found(self, text: str) -> list[str]:
        """The phrases found in `text` (words joined by spaces)."""
        exact = words(text)
        bare = [word if self.bare_matches_accented and fold(word) == word else None for word in exact]
        hits = []
        for parts, folded in self.phrases:
            size = len(parts)
            for start in range(len(exact) - size + 1):
                if all(exact[start + i] == parts[i] or bare[start + i] == folded[i] for i in range(size)):
                    hits.append(" ".join(parts))
                    break
        return hits

    def matches(self, *texts: str) -> bool:
        return any(self.found(text) for text in texts)

    def count(self, text: str) -> int:
        return len(self.found(text))


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word match of one `phrase` in `text` (see PhraseMatcher)."""
    return PhraseMatcher([phrase]).matches(text)


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
