"""Vietnamese-aware text helpers: accent folding, phrase matching, one-line summaries."""

from __future__ import annotations

import re
import unicodedata

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


def _word_matches(word: str, pattern_word: str) -> bool:
    # A word typed with accents must match exactly ("nông" is not "nóng"); a word typed without any
    # accents matches the pattern word's bare form ("nong" is "nóng").
    return word == pattern_word or (fold(word) == word and word == fold(pattern_word))


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word match of `phrase` in `text`, Vietnamese typed with or without diacritics."""
    haystack, needle = words(text), words(phrase)
    if not needle:
        return False
    for start in range(len(haystack) - len(needle) + 1):
        if all(_word_matches(haystack[start + i], part) for i, part in enumerate(needle)):
            return True
    return False


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
