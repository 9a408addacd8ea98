"""The profanity filter for feedback (the cookbook's "add profanity filter for feedback_text").

Vietnamese and English, accent-insensitive, teencode-aware; the word list is data
(autotrain/data/offensive_words.txt): adding a word is adding a line.

Policy: feedback with offensive language is stored — never dropped — flagged `offensive` and closed
(`rejected`, with the reason), so that no rule is generated from it. The client is told in the answer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from autotrain.text import PhraseMatcher

OFFENSIVE = "offensive"


@cache
def offensive_words() -> tuple[str, ...]:
    text = resources.files("autotrain").joinpath("data/offensive_words.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@cache
def _matcher() -> PhraseMatcher:
    # Strict: an accented entry matches only with its accents. Typed without them, many Vietnamese insults
    # are everyday words ("lon" is a can, "cac" is "các", "di" is "đi"), so the list spells out the bare
    # teencode forms that are unambiguous ("dm", "vcl", "dit me").
    return PhraseMatcher(offensive_words(), bare_matches_accented=False)


def offensive_terms(*texts: str) -> list[str]:
    """The offensive words found in the texts, empty when clean."""
    found: list[str] = []
    for text in texts:
        for term in _matcher().found(text):
            if term not in found:
                found.append(term)
    return found
