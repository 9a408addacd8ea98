"""validate_proposal: the checks every generated rule passes before it becomes a pending rule."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import pytest

from autotrain.errors import InvalidInput
from autotrain.models import MAX_RULE_LENGTH, RuleProposal, RuleType, RuleWarning
from autotrain.proposals import LOW_CONFIDENCE, validate_proposal
from autotrain.rulefiles import RuleFiles
from autotrain.settings import DEFAULT_ALLOWED_MODULES

OLD_WEATHER_RULE = "- Luôn ưu tiên áo khoác/dày"
NEW_WEATHER_RULE = "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày"

CURRENT = {
    "fashion_rules.json": [
        "- Luôn hỏi dịp mặc (đi làm, đi chơi, dự tiệc) trước khi gợi ý",
        OLD_WEATHER_RULE,
        "- Gợi ý đầm maxi cho mọi khách",
    ],
    "prompt_v2.txt": ['- Xưng "mình", gọi khách là "bạn"; giọng thân thiện, lịch sự'],
    "stylist_guidelines.md": ["- Phối tối đa 3 màu trong một bộ trang phục"],
}


def proposal(**overrides: object) -> RuleProposal:
    values: dict[str, object] = {
        "module_name": "fashion_rules.json",
        "old_rule": OLD_WEATHER_RULE,
        "new_rule": NEW_WEATHER_RULE,
        "reasoning": "Weather mismatch correction",
        "confidence": 0.85,
    }
    values.update(overrides)
    return RuleProposal(**values)


def validate(candidate: RuleProposal, current: dict[str, list[str]] | None = None) -> RuleProposal:
    return validate_proposal(candidate, CURRENT if current is None else current, DEFAULT_ALLOWED_MODULES)


def test_a_good_proposal_passes_unchanged() -> None:
    result = validate(proposal())
    assert result.module_name == "fashion_rules.json"
    assert result.old_rule == OLD_WEATHER_RULE
    assert result.new_rule == NEW_WEATHER_RULE
    assert result.confidence == 0.85
    assert result.warnings == []
    assert result.rule_type is RuleType.PROMPT_UPDATE


def test_against_the_shipped_rule_files(rules_dir: Path) -> None:
    current = RuleFiles(rules_dir, DEFAULT_ALLOWED_MODULES).current_rules()
    result = validate(proposal(), current)
    assert result.old_rule == OLD_WEATHER_RULE
    assert result.warnings == []


@pytest.mark.parametrize(
    "module", ["other.json", "../fashion_rules.json", "/etc/passwd", "config/fashion_rules.json", ""]
)
def test_module_outside_the_allowed_list_is_invalid(module: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(proposal(module_name=module))
    assert caught.value.code == "invalid_input"


def test_old_rule_not_in_the_file_becomes_none_with_a_warning() -> None:
    result = validate(proposal(old_rule="- Quy tắc không có trong file"))
    assert result.old_rule is None
    assert result.warnings == [RuleWarning.OLD_RULE_NOT_FOUND]


def test_old_rule_in_another_file_is_not_found_in_this_one() -> None:
    result = validate(proposal(module_name="prompt_v2.txt", old_rule=OLD_WEATHER_RULE))
    assert result.old_rule is None
    assert RuleWarning.OLD_RULE_NOT_FOUND in result.warnings


@pytest.mark.parametrize(
    "old_rule",
    ["Luôn ưu tiên áo khoác/dày", "  - Luôn ưu tiên  áo khoác/dày  ", unicodedata.normalize("NFD", OLD_WEATHER_RULE)],
    ids=["no-dash", "spaces", "decomposed"],
)
def test_old_rule_is_normalised_before_lookup(old_rule: str) -> None:
    result = validate(proposal(old_rule=old_rule))
    assert result.old_rule == OLD_WEATHER_RULE
    assert RuleWarning.OLD_RULE_NOT_FOUND not in result.warnings


def test_old_rule_is_found_when_the_file_holds_it_decomposed() -> None:
    """Files typed on some keyboards are NFD; deploy matches them (NFC compare), so validation must too."""
    current = {**CURRENT, "fashion_rules.json": [unicodedata.normalize("NFD", OLD_WEATHER_RULE)]}
    result = validate(proposal(), current)
    assert result.old_rule is not None
    assert unicodedata.normalize("NFC", result.old_rule) == OLD_WEATHER_RULE
    assert RuleWarning.OLD_RULE_NOT_FOUND not in result.warnings


@pytest.mark.parametrize("old_rule", [None, "", "   "])
def test_no_old_rule_means_append_without_warning(old_rule: str | None) -> None:
    result = validate(proposal(old_rule=old_rule))
    assert result.old_rule is None
    assert result.warnings == []


def test_old_rule_equal_to_new_rule_is_dropped() -> None:
    current = {**CURRENT, "fashion_rules.json": [NEW_WEATHER_RULE]}
    result = validate(proposal(old_rule=NEW_WEATHER_RULE), current)
    assert result.old_rule is None


@pytest.mark.parametrize(
    ("given", "clamped"),
    [(1.7, 1.0), (1.0, 1.0), (0.6, 0.6), (0.59, 0.59), (0.0, 0.0), (-0.3, 0.0), (math.nan, 0.0)],
)
def test_confidence_is_clamped_and_low_values_flagged(given: float, clamped: float) -> None:
    result = validate(proposal(confidence=given))
    assert result.confidence == clamped
    assert 0.0 <= result.confidence <= 1.0
    assert (RuleWarning.LOW_CONFIDENCE in result.warnings) is (clamped < LOW_CONFIDENCE)


def test_low_confidence_line_is_0_6() -> None:
    assert LOW_CONFIDENCE == 0.6


@pytest.mark.parametrize(
    ("module", "new_rule"),
    [
        ("fashion_rules.json", "- Gợi ý đầm maxi cho mọi khách"),
        ("fashion_rules.json", "- GỢI Ý ĐẦM MAXI CHO MỌI KHÁCH"),
        ("fashion_rules.json", "- goi y dam maxi cho moi khach"),
        ("fashion_rules.json", "Gợi ý đầm maxi cho mọi khách"),
        ("prompt_v2.txt", "- Phối tối đa 3 màu trong một bộ trang phục"),
    ],
    ids=["same", "upper", "no-diacritics", "no-dash", "other-file"],
)
def test_duplicate_warning_when_the_rule_is_already_in_a_file(module: str, new_rule: str) -> None:
    result = validate(proposal(module_name=module, old_rule=None, new_rule=new_rule))
    assert RuleWarning.DUPLICATE in result.warnings


def test_no_duplicate_warning_for_a_new_rule() -> None:
    assert RuleWarning.DUPLICATE not in validate(proposal()).warnings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Khi trời mưa, gợi ý áo mưa", "- Khi trời mưa, gợi ý áo mưa"),
        ("* Khi trời mưa, gợi ý áo mưa", "- Khi trời mưa, gợi ý áo mưa"),
        ("-Khi trời mưa,\n  gợi ý\táo mưa", "- Khi trời mưa, gợi ý áo mưa"),
        ("  - Khi trời mưa, gợi ý áo mưa\r\n", "- Khi trời mưa, gợi ý áo mưa"),
        (unicodedata.normalize("NFD", "- Khi trời mưa, gợi ý áo mưa"), "- Khi trời mưa, gợi ý áo mưa"),
    ],
    ids=["no-dash", "star", "multiline", "crlf", "decomposed"],
)
def test_new_rule_is_one_line_starting_with_dash(given: str, expected: str) -> None:
    result = validate(proposal(new_rule=given, old_rule=None))
    assert result.new_rule == expected
    assert "\n" not in result.new_rule and "\r" not in result.new_rule


@pytest.mark.parametrize("new_rule", ["", "   ", "- ", "\n"])
def test_empty_new_rule_is_invalid(new_rule: str) -> None:
    with pytest.raises(InvalidInput):
        validate(proposal(new_rule=new_rule))


def test_over_long_rule_is_invalid_and_the_limit_itself_fits() -> None:
    fits = "- " + "a" * (MAX_RULE_LENGTH - 2)
    assert validate(proposal(new_rule=fits, old_rule=None)).new_rule == fits
    with pytest.raises(InvalidInput, match=str(MAX_RULE_LENGTH)):
        validate(proposal(new_rule=fits + "a", old_rule=None))


def test_reasoning_is_one_line_and_bounded() -> None:
    result = validate(proposal(reasoning="Line one.\n\n  Line   two.\t" + "x" * 5000))
    assert result.reasoning.startswith("Line one. Line two. x")
    assert "\n" not in result.reasoning
    assert len(result.reasoning) <= 2000


def test_warnings_are_kept_and_not_repeated() -> None:
    result = validate(
        proposal(
            old_rule="- không có",
            confidence=0.2,
            warnings=[RuleWarning.POSSIBLE_INJECTION, RuleWarning.POSSIBLE_INJECTION, RuleWarning.LOW_CONFIDENCE],
        )
    )
    assert sorted(result.warnings) == sorted(
        [RuleWarning.POSSIBLE_INJECTION, RuleWarning.LOW_CONFIDENCE, RuleWarning.OLD_RULE_NOT_FOUND]
    )
    assert len(result.warnings) == len(set(result.warnings))


def test_the_input_proposal_is_not_modified() -> None:
    original = proposal(new_rule="Khi trời mưa\ngợi ý áo mưa", confidence=3.0)
    snapshot = original.model_dump()
    validate(original)
    assert original.model_dump() == snapshot
