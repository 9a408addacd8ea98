"""The offline heuristic generator: the cookbook's patterns, accent-free typing, drafts, and extending it."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autotrain.generators.heuristic import HeuristicRuleGenerator
from autotrain.generators.patterns import HEURISTIC_PATTERNS, HeuristicPattern
from autotrain.models import MAX_RULE_LENGTH, Feedback, FeedbackStatus, FeedbackType, RuleProposal, RuleType
from autotrain.ports import GenerationResult
from autotrain.proposals import validate_proposal
from autotrain.rulefiles import RuleFiles, normalize_rule_line
from autotrain.settings import DEFAULT_ALLOWED_MODULES

NOW = datetime(2025, 1, 1, tzinfo=UTC)

WEATHER = RuleProposal(
    module_name="fashion_rules.json",
    rule_type=RuleType.PROMPT_UPDATE,
    old_rule="- Luôn ưu tiên áo khoác/dày",
    new_rule="- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày",
    reasoning="Weather mismatch correction",
    confidence=0.85,
)
HEIGHT = RuleProposal(
    module_name="fashion_rules.json",
    rule_type=RuleType.PROMPT_UPDATE,
    old_rule="- Gợi ý đầm maxi cho mọi khách",
    new_rule="- Dưới 1m55: gợi ý đầm ngắn (midi, knee-length)",
    reasoning="Proportion-appropriate recommendations",
    confidence=0.9,
)
COOKBOOK_RULES = {WEATHER.new_rule, HEIGHT.new_rule}


def feedback(
    feedback_text: str,
    query: str = "tư vấn giúp mình",
    ai_response: str = "",
    feedback_type: FeedbackType = FeedbackType.BUG,
) -> Feedback:
    return Feedback(
        feedback_id="FB-1001",
        user_id="u1",
        query=query,
        ai_response=ai_response,
        feedback_text=feedback_text,
        feedback_type=feedback_type,
        status=FeedbackStatus.PENDING,
        source="api",
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.fixture
def generator() -> HeuristicRuleGenerator:
    return HeuristicRuleGenerator(DEFAULT_ALLOWED_MODULES)


QUICK_START = feedback(
    "Trời nóng quá, AI còn tư vấn áo khoác",
    query="tìm áo khoác cho trời 35 độ",
    ai_response="Mình gợi ý áo khoác nỉ này...",
)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# ---------------------------------------------------------------------- the cookbook's patterns


async def test_cookbook_quick_start_gives_the_weather_rule_exactly(generator: HeuristicRuleGenerator) -> None:
    result = await generator.generate(QUICK_START, {})

    assert isinstance(result, GenerationResult)
    assert result.proposal == WEATHER
    assert result.info.generator == "heuristic"
    assert generator.name == "heuristic"
    assert isinstance(result.info.latency_ms, int) and result.info.latency_ms >= 0


@pytest.mark.parametrize(
    ("text", "query", "ai_response"),
    [
        ("troi nong qua, AI con tu van ao khoac", "tim ao khoac cho troi 35 do", ""),
        ("TRỜI NÓNG QUÁ, AI CÒN TƯ VẤN ÁO KHOÁC", "TÌM ÁO KHOÁC CHO TRỜI 35 ĐỘ", ""),
        ("TROI NONG QUA", "TIM AO KHOAC", ""),
        (nfd("Trời nóng quá, AI còn tư vấn áo khoác"), nfd("tìm áo khoác cho trời 35 độ"), ""),
        ("Nóng!!! mà gợi ý áo khoác", "đồ đi chơi", "Bạn thử áo khoác nỉ này"),
        ("nắng 38 độ mà bảo mặc áo dày", "đi dạo phố mặc gì", "Bạn mặc áo dày cho ấm"),
        ("It's way too hot for that", "need a jacket for summer?", ""),
    ],
    ids=["no-diacritics", "upper", "upper-no-diacritics", "decomposed", "context-in-answer", "nang", "english"],
)
def test_weather_pattern_matches_however_it_is_typed(
    generator: HeuristicRuleGenerator, text: str, query: str, ai_response: str
) -> None:
    assert generator.propose(feedback(text, query=query, ai_response=ai_response)) == WEATHER


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("Trời nóng quá mà bot gợi ý váy len", "tìm váy đi biển"),
        ("Mình thích áo khoác này", "tìm áo khoác"),
    ],
    ids=["hot-without-jacket", "jacket-without-hot"],
)
def test_weather_pattern_needs_both_heat_and_a_jacket(generator: HeuristicRuleGenerator, text: str, query: str) -> None:
    assert generator.propose(feedback(text, query=query)).new_rule != WEATHER.new_rule


@pytest.mark.parametrize(
    "text",
    [
        "Mình dáng lùn, mặc maxi bị chìm",
        "dáng lùn",
        "Mình thấp, mặc đầm dài không hợp",
        "minh dang lun mac maxi bi chim",
        "toi hoi thap nen dam dai bi chim",
        "MÌNH DÁNG LÙN",
        nfd("Mình thấp lắm"),
    ],
)
def test_height_pattern_matches_however_it_is_typed(generator: HeuristicRuleGenerator, text: str) -> None:
    assert generator.propose(feedback(text, query="gợi ý đầm đi tiệc", ai_response="Bạn thử đầm maxi")) == HEIGHT


def test_weather_comes_before_height_as_in_the_cookbook(generator: HeuristicRuleGenerator) -> None:
    both = feedback("Trời nóng, mình lại dáng lùn", query="tìm áo khoác")
    assert generator.propose(both) == WEATHER


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("Chức năng lọc size không chạy", "tìm áo khoác nam"),
        ("Tư vấn nông cạn quá", "tìm áo khoác nữ"),
        ("Mình muốn chụp ảnh ở tháp Rùa, gợi ý đồ gì đẹp", "đồ đi chơi"),
    ],
    ids=["chuc-nang-is-not-sunny", "nong-can-is-not-hot", "thap-rua-is-not-short"],
)
def test_accented_words_that_only_fold_to_a_pattern_word_do_not_fire_it(
    generator: HeuristicRuleGenerator, text: str, query: str
) -> None:
    """Folding is for text typed without accents; a word typed with other accents is another word.

    The cookbook's matcher (`"nóng" in fb_text`) would not fire on these either.
    """
    proposal = generator.propose(feedback(text, query=query))
    assert proposal.new_rule not in COOKBOOK_RULES
    assert proposal.confidence < 0.6


def test_budget_pattern(generator: HeuristicRuleGenerator) -> None:
    proposal = generator.propose(feedback("Đắt quá, toàn gợi ý đồ 2 triệu", query="áo thun đi học"))
    assert proposal.module_name == "fashion_rules.json"
    assert proposal.old_rule is None
    assert "ngân sách" in proposal.new_rule
    assert proposal.confidence == 0.7


async def test_cookbook_proposal_replaces_a_real_line_of_the_shipped_file(
    generator: HeuristicRuleGenerator, rules_dir: Path
) -> None:
    files = RuleFiles(rules_dir, DEFAULT_ALLOWED_MODULES)
    current = files.current_rules()

    result = await generator.generate(QUICK_START, current)
    validated = validate_proposal(result.proposal, current, DEFAULT_ALLOWED_MODULES)

    assert validated.old_rule == WEATHER.old_rule
    assert validated.new_rule == WEATHER.new_rule
    assert validated.warnings == []


# ---------------------------------------------------------------------- drafts when no pattern matches


def test_draft_rule_is_specific_readable_and_low_confidence(generator: HeuristicRuleGenerator) -> None:
    text = "AI gửi link cửa hàng bị lỗi 404"
    proposal = generator.propose(feedback(text, query="cho mình link cửa hàng"))

    assert proposal.new_rule.startswith("- ")
    assert "Adjust based on" not in proposal.new_rule
    assert text in proposal.new_rule
    assert "cho mình link cửa hàng" in proposal.new_rule
    assert proposal.new_rule == normalize_rule_line(proposal.new_rule)
    assert proposal.old_rule is None
    assert proposal.confidence < 0.6
    assert proposal.module_name == "fashion_rules.json"
    assert proposal.reasoning


@pytest.mark.parametrize("feedback_type", list(FeedbackType))
def test_every_draft_is_below_the_low_confidence_line(
    generator: HeuristicRuleGenerator, feedback_type: FeedbackType
) -> None:
    proposal = generator.propose(feedback("Link bị lỗi 404", query="cho link", feedback_type=feedback_type))
    assert 0 < proposal.confidence < 0.6
    assert proposal.new_rule not in COOKBOOK_RULES


def test_english_draft_stays_english(generator: HeuristicRuleGenerator) -> None:
    proposal = generator.propose(
        feedback("Please show the shipping cost", query="where is my order", feedback_type=FeedbackType.SUGGESTION)
    )
    assert proposal.new_rule.startswith("- ")
    assert "Please show the shipping cost" in proposal.new_rule
    assert "where is my order" in proposal.new_rule
    assert not any(ch in proposal.new_rule for ch in "ạảãàáâầấậẩẫăằắặẳẵđ")


def test_praise_draft_does_not_tell_the_bot_to_avoid_what_was_praised(generator: HeuristicRuleGenerator) -> None:
    for text, query in [
        ("Tư vấn rất có tâm, cảm ơn shop", "tìm quà tặng mẹ"),
        ("Great advice, thanks a lot", "gift ideas for my mum"),
    ]:
        proposal = generator.propose(feedback(text, query=query, feedback_type=FeedbackType.PRAISE))
        assert text in proposal.new_rule
        lowered = proposal.new_rule.lower()
        assert "tránh" not in lowered and "avoid" not in lowered, proposal.new_rule
        assert "lỗi" not in lowered and "problem" not in lowered, proposal.new_rule


def test_long_multiline_feedback_gives_one_line_within_the_length_limit(generator: HeuristicRuleGenerator) -> None:
    text = "Bot trả lời sai.\n\n" + "chi tiết rất dài " * 300
    proposal = generator.propose(feedback(text, query="mình cần tư vấn\n" * 200))

    assert "\n" not in proposal.new_rule
    assert len(proposal.new_rule) <= MAX_RULE_LENGTH
    assert proposal.new_rule == normalize_rule_line(proposal.new_rule)
    assert "Bot trả lời sai." in proposal.new_rule
    assert "…" in proposal.new_rule


@pytest.mark.parametrize(
    ("text", "query", "module"),
    [
        ("Bot trả lời dài dòng quá, đọc mệt", "tư vấn đồ đi làm", "prompt_v2.txt"),
        ("Xưng hô kỳ cục, giọng như robot", "chào shop", "prompt_v2.txt"),
        ("The tone is rude and the answer is too long", "anything for tonight?", "prompt_v2.txt"),
        ("Phối màu không hợp chút nào, xanh lá với đỏ chói", "đồ đi đám cưới", "stylist_guidelines.md"),
        ("These colours clash, not a wedding outfit", "what to wear to a wedding", "stylist_guidelines.md"),
        ("Size M hết hàng mà vẫn gợi ý", "quần jean nữ", "fashion_rules.json"),
        ("Link bị lỗi 404", "cho mình link", "fashion_rules.json"),
    ],
    ids=["long-vi", "tone-vi", "tone-en", "colour-vi", "occasion-en", "product", "nothing"],
)
def test_draft_module_is_chosen_from_the_complaint(
    generator: HeuristicRuleGenerator, text: str, query: str, module: str
) -> None:
    proposal = generator.propose(feedback(text, query=query))
    assert proposal.new_rule not in COOKBOOK_RULES
    assert proposal.module_name == module


# ---------------------------------------------------------------------- allowed modules and extending


def test_patterns_for_modules_not_allowed_are_skipped() -> None:
    generator = HeuristicRuleGenerator(("prompt_v2.txt", "stylist_guidelines.md"))
    proposal = generator.propose(QUICK_START)

    assert proposal.new_rule != WEATHER.new_rule
    assert proposal.old_rule is None
    assert proposal.module_name in ("prompt_v2.txt", "stylist_guidelines.md")
    assert proposal.confidence < 0.6


def test_draft_module_is_always_an_allowed_one() -> None:
    generator = HeuristicRuleGenerator(("stylist_guidelines.md",))
    proposal = generator.propose(feedback("Size M hết hàng mà vẫn gợi ý", query="quần jean nữ"))
    assert proposal.module_name == "stylist_guidelines.md"


EMOJI_PATTERN = HeuristicPattern(
    name="emoji_overuse",
    feedback_any=("emoji", "icon"),
    context_any=(),
    module_name="prompt_v2.txt",
    old_rule=None,
    new_rule="- Dùng tối đa một emoji trong mỗi câu trả lời",
    reasoning="Too many emoji",
    confidence=0.8,
)


def test_adding_a_pattern_is_one_entry() -> None:
    default = HeuristicRuleGenerator(DEFAULT_ALLOWED_MODULES)
    extended = HeuristicRuleGenerator(DEFAULT_ALLOWED_MODULES, patterns=(*HEURISTIC_PATTERNS, EMOJI_PATTERN))
    complaint = feedback("Bot dùng nhiều Emoji quá 😅😅", query="tìm váy")

    assert default.propose(complaint).new_rule != EMOJI_PATTERN.new_rule
    assert extended.propose(complaint) == RuleProposal(
        module_name="prompt_v2.txt",
        rule_type=RuleType.PROMPT_UPDATE,
        old_rule=None,
        new_rule=EMOJI_PATTERN.new_rule,
        reasoning="Too many emoji",
        confidence=0.8,
    )
    assert extended.matching_pattern(complaint) is EMOJI_PATTERN
    # the built-in patterns still work next to it
    assert extended.propose(QUICK_START) == WEATHER


def test_a_pattern_with_context_fires_only_with_that_context() -> None:
    pattern = HeuristicPattern(
        name="wedding_white",
        feedback_any=("màu trắng",),
        context_any=("đám cưới",),
        module_name="stylist_guidelines.md",
        old_rule=None,
        new_rule="- Không gợi ý màu trắng cho khách mời đám cưới",
        reasoning="White is for the bride",
        confidence=0.75,
        rule_type=RuleType.SYSTEM_MESSAGE,
    )
    generator = HeuristicRuleGenerator(DEFAULT_ALLOWED_MODULES, patterns=(pattern,))

    hit = generator.propose(feedback("Sao lại gợi ý mau trang", query="do di dam cuoi"))
    assert hit.new_rule == pattern.new_rule
    assert hit.rule_type is RuleType.SYSTEM_MESSAGE
    miss = generator.propose(feedback("Sao lại gợi ý màu trắng", query="đồ đi làm"))
    assert miss.new_rule != pattern.new_rule


def test_an_empty_pattern_list_always_drafts() -> None:
    generator = HeuristicRuleGenerator(DEFAULT_ALLOWED_MODULES, patterns=())
    proposal = generator.propose(QUICK_START)
    assert proposal.new_rule not in COOKBOOK_RULES
    assert "Trời nóng quá, AI còn tư vấn áo khoác" in proposal.new_rule
