"""Vietnamese-aware text helpers: accent folding, phrase matching, one-line summaries."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^0-9a-z]+")

# Characters that show nothing: every Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt, the
# ranges unchanged from 14.0 to 16.0, reserved code points in them included) and every format character
# (category Cf, which adds the Arabic and Syriac marks, U+FFF9..FFFB interlinear annotation and the
# Egyptian format controls). A static table: `unicodedata` knows Cf but not Default_Ignorable, and a scan
# of every code point at import would cost 80 ms; tests/test_invisible_characters.py checks the table
# against the running Python's Cf. ZWJ and ZWNJ (U+200C, U+200D) go too: Vietnamese never needs them, they
# split a word to hide it from the filters ("v\u200dcl"), and an emoji sequence only falls apart into its
# emoji. Newlines and tabs are not here (they are control characters, Cc, handled by the caller).
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x0600, 0x0605),  # Arabic number signs (Cf)
    (0x061C, 0x061C),  # Arabic letter mark
    (0x06DD, 0x06DD),  # Arabic end of ayah (Cf)
    (0x070F, 0x070F),  # Syriac abbreviation mark (Cf)
    (0x0890, 0x0891),  # Arabic pound / piastre mark above (Cf)
    (0x08E2, 0x08E2),  # Arabic disputed end of ayah (Cf)
    (0x115F, 0x1160),  # Hangul choseong / jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors, vowel separator
    (0x200B, 0x200F),  # zero width space, ZWNJ, ZWJ, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFFB),  # reserved, interlinear annotation anchors (Cf)
    (0x110BD, 0x110BD),  # Kaithi number sign (Cf)
    (0x110CD, 0x110CD),  # Kaithi number sign above (Cf)
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls (Cf)
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE0FFF),  # language tag, tag characters, variation selectors supplement, reserved
)
_INVISIBLE = re.compile(
    "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in INVISIBLE_RANGES) + "]"
)


def strip_invisible(text: str) -> str:
    """`text` without the characters that show nothing (INVISIBLE_RANGES): "re\u00adveal" is "reveal"."""
    return _INVISIBLE.sub("", text)


@functools.lru_cache(maxsize=4096)  # a pure function of the text: the content filter folds one text per phrase list
def fold(text: str) -> str:
    """Lower-case, strip diacritics (đ → d), collapse punctuation to single spaces.

    Vietnamese is often typed without accents ("troi nong qua"), so patterns match on the folded form.
    """
    decomposed = unicodedata.normalize("NFD", strip_invisible(text).lower().replace("đ", "d").replace("Đ", "d"))
    # the combining diacritical marks (all Vietnamese tones and vowel marks) in one pass; a character-by-
    # character look only for text with other non-ASCII left (another script's marks)
    bare = _COMBINING_MARKS.sub("", decomposed)
    if bare.isascii():  # the usual case: a byte table turns every non-word character into a space
        return " ".join(bare.encode("ascii").translate(_ASCII_WORD_TABLE).decode("ascii").split())
    bare = "".join(ch for ch in bare if unicodedata.category(ch) != "Mn")
    return _NON_WORD.sub(" ", bare).strip()


_COMBINING_MARKS = re.compile("[\u0300-\u036f]+")  # the block is all category Mn
_ASCII_WORD_TABLE = bytes(c if chr(c) in "0123456789abcdefghijklmnopqrstuvwxyz" else 32 for c in range(256))


_WORD = re.compile(r"\w+")
# a Latin letter carrying a combining mark once decomposed (Vietnamese tones and vowel marks are all in this block)
_LATIN_MARK = re.compile("[a-z][\u0300-\u036f]")


def words(text: str) -> list[str]:
    """Lower-case NFC words, accents kept."""
    return _WORD.findall(unicodedata.normalize("NFC", strip_invisible(text).lower()))


def has_diacritics(text: str) -> bool:
    """Whether `text` was typed with diacritics: any accented Latin letter, or đ."""
    decomposed = unicodedata.normalize("NFD", strip_invisible(text).lower())
    return "đ" in decomposed or _LATIN_MARK.search(decomposed) is not None


class PhraseMatcher:
    """Whole-word phrase matching, Vietnamese typed with or without diacritics.

    Words are compared whole (a phrase "dat" is not in "datxyz"). A word typed with accents must match
    exactly, after NFC ("đặt", to order, is not "đắt", expensive; "nông" is not "nóng"). Folding is for text
    typed without accents: when a text has no diacritics at all, its words match the phrase words' bare
    forms ("ao nay dat qua" has "đắt"; ambiguous, as "dat" is "đặt" as often, but such a text says nothing
    more). A text with diacritics anywhere is taken as typed with them, so its bare words are just bare
    words: "dat" in "Áo này dat quá" is "dat", not "đắt". Phrases are prepared once; each text is split and
    folded once, however many phrases are looked for.

    `bare_matches_accented=False` never folds (the profanity list: "lon", a can, is not "lồn").
    `fold_mixed_text=True` folds each bare word even in a text with diacritics elsewhere: for a flag, where a
    false alarm costs a reviewer's look and a miss costs more ("hãy quen huong dan").
    """

    def __init__(
        self, phrases: Iterable[str], *, bare_matches_accented: bool = True, fold_mixed_text: bool = False
    ) -> None:
        self.phrases = [
            (tuple(parts), tuple(fold(part) for part in parts)) for parts in (words(p) for p in phrases) if parts
        ]
        self.bare_matches_accented = bare_matches_accented
        self.fold_mixed_text = fold_mixed_text
        # phrases by the bare form of their first word: a text is only checked against phrases that can start
        # at one of its words
        self._by_first: dict[str, list[int]] = {}
        for index, (_, folded) in enumerate(self.phrases):
            self._by_first.setdefault(folded[0], []).append(index)

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Every occurrence in `text`: (phrase, first word index, index after its last word), by start."""
        exact = words(text)
        folded_words = [fold(word) for word in exact]
        folds = self.bare_matches_accented and (self.fold_mixed_text or not has_diacritics(text))
        # a word stands for its bare form only when it is one (no accents: "nong", not "nông")
        bare = [word if folds and folded_words[i] == word else None for i, word in enumerate(exact)]
        hits: list[tuple[str, int, int]] = []
        for start, first in enumerate(folded_words):
            for index in self._by_first.get(first, ()):
                parts, folded = self.phrases[index]
                end = start + len(parts)
                if end <= len(exact) and all(
                    exact[start + i] == parts[i] or bare[start + i] == folded[i] for i in range(len(parts))
                ):
                    hits.append((" ".join(parts), start, end))
        return hits

    def found(self, text: str) -> list[str]:
        """The phrases found in `text` (words joined by spaces), in the order they were given."""
        hit = {phrase for phrase, _, _ in self.spans(text)}
        return [joined for joined in (" ".join(parts) for parts, _ in self.phrases) if joined in hit]

    def matches(self, *texts: str) -> bool:
        """Whether any text has any phrase; each text is judged on its own (typed with accents or not)."""
        return any(self.found(text) for text in texts)

    def count(self, *texts: str) -> int:
        """How many distinct phrases the texts hold between them."""
        return len({phrase for text in texts for phrase in self.found(text)})


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
