"""Known feedback patterns for the offline generator. Adding one is adding one entry to HEURISTIC_PATTERNS.

Phrases are matched as whole words; in a text typed without any diacritics, accent-insensitively, so "nóng"
also matches "troi nong qua" (autotrain.text.PhraseMatcher).

A pattern's `reasoning` is for the reviewer: marked with N_() here, it is written in the language of the
generation (autotrain.i18n; a pattern added without a translation is shown as written). Its `new_rule` is for
the chatbot's prompt and stays as written: the stylist's rule files are Vietnamese, and `old_rule` must be a
line of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from autotrain.i18n import N_
from autotrain.models import RuleType


@dataclass(frozen=True)
class HeuristicPattern:
    name: str
    feedback_any: tuple[str, ...]  # one of these must be in the feedback text
    context_any: tuple[str, ...]  # and, when given, one of these in the query or the AI response
    module_name: str
    old_rule: str | None
    new_rule: str
    reasoning: str  # for the reviewer: N_("..."), translated when proposed
    confidence: float
    rule_type: RuleType = RuleType.PROMPT_UPDATE
    # other readings of the matched words: a match these cover does not count ("toi muon dat hang" is
    # "đặt hàng", to order, not "đắt"). Only a text typed without accents can be read both ways.
    feedback_not: tuple[str, ...] = ()


HEURISTIC_PATTERNS: tuple[HeuristicPattern, ...] = (
    # The cookbook's two patterns: their output is kept exactly.
    HeuristicPattern(
        name="weather_mismatch",
        feedback_any=("nóng", "nắng", "oi bức", "hot", "too warm"),
        context_any=("áo khoác", "áo dày", "jacket", "coat"),
        module_name="fashion_rules.json",
        old_rule="- Luôn ưu tiên áo khoác/dày",
        new_rule="- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày",
        reasoning=N_("Weather mismatch correction"),
        confidence=0.85,
    ),
    HeuristicPattern(
        name="height_proportion",
        feedback_any=("dáng lùn", "thấp", "lùn", "petite"),
        context_any=(),
        module_name="fashion_rules.json",
        old_rule="- Gợi ý đầm maxi cho mọi khách",
        new_rule="- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)",
        reasoning=N_("Proportion-appropriate recommendations"),
        confidence=0.9,
    ),
    HeuristicPattern(
        name="budget_ignored",
        feedback_any=("đắt", "mắc quá", "giá cao", "ngân sách", "expensive", "budget"),
        context_any=(),
        module_name="fashion_rules.json",
        old_rule=None,
        new_rule="- Hỏi ngân sách của khách trước khi gợi ý và chỉ đưa sản phẩm trong tầm giá đó",
        reasoning=N_("Recommendations ignored the customer's budget"),
        confidence=0.7,
        feedback_not=(
            "đặt hàng",
            "đặt mua",
            "đặt đơn",
            "đặt lịch",
            "đặt cọc",
            "đặt trước",
            "đạt yêu cầu",
            "đạt được",
        ),
    ),
)


# The feedback says the bot did not follow a rule when it has one of these and one of RULE_WORDS ("bot không
# làm theo quy tắc", "ignored the rule"); "không làm theo yêu cầu" is about the customer's request, not a rule.
NOT_FOLLOWED_PHRASES: tuple[str, ...] = (
    "không làm theo",
    "không theo",
    "không tuân theo",
    "không tuân thủ",
    "chẳng theo",
    "phớt lờ",
    "lờ đi",
    "bỏ qua",
    "vi phạm",
    "trái với",
    "ngược với",
    "đã có",
    "dù có",
    "mặc dù có",
    "ignored",
    "ignores",
    "ignoring",
    "did not follow",
    "didn't follow",
    "does not follow",
    "doesn't follow",
    "not following",
    "violated",
    "violates",
    "broke",
    "breaks",
    "despite",
    "against",
    "there is a",
    "already has",
)
RULE_WORDS: tuple[str, ...] = (
    "quy tắc",
    "quy định",
    "nguyên tắc",
    "luật",
    "rule",
    "rules",
    "guideline",
    "guidelines",
)

# Words that point the offline generator at a rule file when no pattern matches.
MODULE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "prompt_v2.txt": (
        "giọng",
        "xưng hô",
        "dài dòng",
        "trả lời dài",
        "ngắn gọn",
        "emoji",
        "tiếng anh",
        "lịch sự",
        "thô lỗ",
        "chào",
        "trả lời",
        "tone",
        "rude",
        "too long",
        "language",
        "format",
    ),
    "stylist_guidelines.md": (
        "phối",
        "phối đồ",
        "màu",
        "dáng người",
        "phong cách",
        "dịp",
        "đám cưới",
        "công sở",
        "tiệc",
        "đi biển",
        "outfit",
        "color",
        "colour",
        "style",
        "occasion",
        "wedding",
    ),
    "fashion_rules.json": (
        "gợi ý",
        "sản phẩm",
        "size",
        "cỡ",
        "áo",
        "quần",
        "đầm",
        "váy",
        "giày",
        "recommend",
        "product",
    ),
}

DEFAULT_MODULE = "fashion_rules.json"
