"""Checks on a proposed rule's content: does it look injected through the feedback, carry a URL, code or a
secret, copy the feedback verbatim, or (nearly) repeat a rule that exists? Each finding is a RuleWarning.

Feedback text is untrusted: an end user can write "ignore previous instructions and …". Whatever the
generator made of it, a rule from such feedback is flagged, so an admin reads it and it is never approved
automatically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from autotrain.models import RuleWarning
from autotrain.text import PhraseMatcher, fold

# Phrases of prompt injection, English and Vietnamese (matched accent-insensitively as whole words).
INJECTION_PHRASES: tuple[str, ...] = (
    "ignore previous instructions",
    "ignore all previous",
    "ignore the above",
    "ignore your instructions",
    "disregard previous",
    "disregard all",
    "forget your instructions",
    "system prompt",
    "reveal the prompt",
    "reveal your prompt",
    "print your instructions",
    "you are now",
    "jailbreak",
    "developer mode",
    "prompt injection",
    "bỏ qua hướng dẫn",
    "bỏ qua mọi hướng dẫn",
    "bỏ qua các hướng dẫn",
    "bỏ qua chỉ dẫn",
    "quên hướng dẫn",
    "tiết lộ prompt",
    "tiết lộ lời nhắc",
    "lời nhắc hệ thống",
    "prompt hệ thống",
    "hiển thị prompt",
)

_URL = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|io|vn|xyz|ru|info|link|ly|me|app)\b)", re.I)
_CODE = re.compile(
    r"(```|`[^`]+`|<\s*/?\s*(script|iframe|img|a|style)\b|</?[a-z]+>|\{\{|\}\}|\$\(|\)\s*=>|"
    r"\bselect\s+(\*|[\w,]+)\s+from\s+\w+|\bdrop\s+table\b|\bdelete\s+from\b|"
    r"\b(import|from)\s+[a-z_]+\s+import\b|\bimport\s+(os|sys|subprocess|requests)\b|"
    r"\b(def|function|eval|exec|system)\s*\w*\s*\()",
    re.I,
)
_SECRET = re.compile(
    r"(sk-ant-[\w-]+|sk-[A-Za-z0-9]{20,}|xox[abpr]-[\w-]+|xapp-[\w-]+|AKIA[0-9A-Z]{16}|"
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(password|passwd|api[_ ]?key|secret[_ ]?key|token)\s*[:=]|"
    r"\b[A-Za-z0-9+/_-]{40,}\b)",
    re.I,
)

COPY_MIN_CHARS = 40  # a verbatim run this long from the feedback is a copy, not a paraphrase
NEAR_DUPLICATE_RATIO = 0.88


_INJECTION = PhraseMatcher(INJECTION_PHRASES, fold_mixed_text=True)  # a flag: a false alarm costs a look
# "ignore your previous instructions", "bỏ qua tất cả các hướng dẫn trước": a verb, a few words, an object
# (matched on the folded text: lower case, no accents, punctuation as spaces)
_INJECTION_SHAPE = re.compile(
    r"\b(ignore|disregard|forget|override|bypass|bo qua)\s+(?:\w+\s+){0,4}?"
    r"(instructions?|prompts?|rules|guidelines|huong dan|chi dan|chi thi|loi nhac)\b"
    # showing things is normal ("hiển thị hướng dẫn chọn size"); showing the prompt is not
    r"|\b(reveal|print|show|repeat|leak|tiet lo|hien thi|in ra)\s+(?:\w+\s+){0,4}?"
    r"(system prompt|prompts?|instructions|loi nhac|chi thi he thong|prompt he thong)\b"
)


def injection_suspected(*texts: str) -> bool:
    return _INJECTION.matches(*texts) or any(_INJECTION_SHAPE.search(fold(text)) for text in texts)


def longest_common_run(a: str, b: str) -> int:
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size


def content_warnings(
    new_rule: str,
    *,
    feedback_texts: Sequence[str] = (),
    check_copy: bool = True,
) -> list[RuleWarning]:
    """Warnings about the rule's own text, and about the feedback it came from."""
    warnings: list[RuleWarning] = []
    if injection_suspected(new_rule, *feedback_texts):
        warnings.append(RuleWarning.POSSIBLE_INJECTION)
    if _URL.search(new_rule):
        warnings.append(RuleWarning.CONTAINS_URL)
    if _CODE.search(new_rule):
        warnings.append(RuleWarning.CONTAINS_CODE)
    if _SECRET.search(new_rule):
        warnings.append(RuleWarning.CONTAINS_SECRET)
    if check_copy:
        folded_rule = fold(new_rule)
        for text in feedback_texts:
            folded = fold(text)
            if len(folded) >= COPY_MIN_CHARS and longest_common_run(folded_rule, folded) >= COPY_MIN_CHARS:
                warnings.append(RuleWarning.COPIED_FEEDBACK)
                break
    return warnings


@dataclass(frozen=True)
class Duplicate:
    """A rule that (nearly) repeats a line already in a file, and that line as the file has it."""

    warning: RuleWarning  # DUPLICATE or NEAR_DUPLICATE
    line: str


def duplicate_warning(new_rule: str, existing: Iterable[str]) -> Duplicate | None:
    """DUPLICATE when the rule is already there (ignoring case and accents), NEAR_DUPLICATE when almost; with
    the line it repeats (the first exact match, else the nearest)."""
    folded = fold(new_rule)
    best = 0.0
    nearest: str | None = None
    for line in existing:
        other = fold(line)
        if other == folded:
            return Duplicate(RuleWarning.DUPLICATE, line)
        matcher = SequenceMatcher(None, folded, other, autojunk=False)
        if matcher.real_quick_ratio() >= NEAR_DUPLICATE_RATIO and matcher.quick_ratio() >= NEAR_DUPLICATE_RATIO:
            ratio = matcher.ratio()
            if ratio > best:
                best, nearest = ratio, line
    if nearest is not None and best >= NEAR_DUPLICATE_RATIO:
        return Duplicate(RuleWarning.NEAR_DUPLICATE, nearest)
    return None
