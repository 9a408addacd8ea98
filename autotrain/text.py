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


def contains_phrase(folded_text: str, phrase: str) -> bool:
    """Whole-word match of `phrase` (folded here) inside already-folded text."""
    folded_phrase = fold(phrase)
    return bool(folded_phrase) and f" {folded_phrase} " in f" {folded_text} "


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
