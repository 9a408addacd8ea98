"""Rule files: parsing, applying and reverting one rule (pure, on bytes), and RuleFiles' safe I/O on real files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import stat
import threading
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autotrain.errors import InvalidInput, RuleFileInvalid, RuleFileWriteFailed
from autotrain.models import MAX_RULE_LENGTH, DeployOutcome
from autotrain.rulefiles import (
    JsonRuleDocument,
    LineRuleDocument,
    RuleFiles,
    content_version,
    deploy_entry,
    normalize_rule_line,
    parse_rule_file,
)
from autotrain.settings import DEFAULT_ALLOWED_MODULES

OLD_WEATHER_RULE = "- Luôn ưu tiên áo khoác/dày"
NEW_WEATHER_RULE = "- Khi trời nóng (>30°): KHÔNG gợi ý áo khoác dày"
SHIPPED_JSON_RULE = "- Không gợi ý sản phẩm đã hết hàng"
DEPLOYED_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
ENTRY = deploy_entry(rule_id="RUL-1001", feedback_id="FB-1001", confidence=0.85, deployed_at=DEPLOYED_AT)
LATER_ENTRY = deploy_entry(rule_id="RUL-1002", feedback_id="FB-1002", confidence=0.7, deployed_at=DEPLOYED_AT)

PROMPT_RULE = "- Trả lời ngắn gọn, tối đa 5 câu, trừ khi khách muốn giải thích chi tiết"
PROMPT_LAST_RULE = "- Không bịa thông tin về giá, chất liệu hay tồn kho"
GUIDE_RULE = "- Công sở: gợi ý trang phục lịch sự, tránh đồ quá ngắn hoặc quá bó"


def stored(detail: dict[str, Any]) -> dict[str, Any]:
    """A change detail as the deployments table gives it back (JSON round trip)."""
    return json.loads(json.dumps(detail, ensure_ascii=False))


def json_rules(content: bytes) -> list[dict[str, Any]]:
    return json.loads(content.decode("utf-8"))["rules"]


def line_rules(content: bytes) -> list[str]:
    return LineRuleDocument.parse(content).rule_lines()


# ---------------------------------------------------------------------- small helpers


def test_normalize_rule_line_makes_one_nfc_line_starting_with_dash() -> None:
    decomposed = unicodedata.normalize("NFD", "Khi trời mưa\n   gợi ý  áo mưa ")
    assert normalize_rule_line(decomposed) == "- Khi trời mưa gợi ý áo mưa"
    assert normalize_rule_line("* Một quy tắc") == "- Một quy tắc"
    assert normalize_rule_line("-Một quy tắc") == "- Một quy tắc"
    assert normalize_rule_line("• Một quy tắc") == "- Một quy tắc"
    assert normalize_rule_line("- Đã chuẩn") == "- Đã chuẩn"


@pytest.mark.parametrize("text", ["", "   ", "- ", "-", "\n\t"])
def test_normalize_rule_line_refuses_empty_rules(text: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_rule_line(text)


def test_normalize_rule_line_length_limit() -> None:
    fits = "x" * (MAX_RULE_LENGTH - 2)
    assert normalize_rule_line(fits) == "- " + fits
    with pytest.raises(InvalidInput, match=str(MAX_RULE_LENGTH)):
        normalize_rule_line(fits + "y")


def test_content_version_is_sha256_prefix() -> None:
    content = "- Quy tắc\n".encode()
    assert content_version(content) == hashlib.sha256(content).hexdigest()[:16]
    assert content_version(content) != content_version(content + b"\n")


def test_deploy_entry_has_the_cookbook_fields() -> None:
    assert ENTRY == {
        "added_from": "FB-1001",
        "rule_id": "RUL-1001",
        "confidence": 0.85,
        "deployed_at": "2025-03-04T05:06:07+00:00",
    }


# ---------------------------------------------------------------------- JSON documents


def test_json_replace_keeps_position_carries_fields_and_bumps_version(rules_dir: Path) -> None:
    content = (rules_dir / "fashion_rules.json").read_bytes()
    before = json.loads(content)
    index = [entry["rule"] for entry in before["rules"]].index(OLD_WEATHER_RULE)

    change = JsonRuleDocument.parse(content).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)

    assert change.outcome is DeployOutcome.REPLACED
    assert change.touches_file
    after = json.loads(change.content)
    assert after["version"] == before["version"] + 1
    assert len(after["rules"]) == len(before["rules"])
    assert after["rules"][index] == {"rule": NEW_WEATHER_RULE, **ENTRY}
    assert (
        after["rules"][:index] + after["rules"][index + 1 :] == before["rules"][:index] + before["rules"][index + 1 :]
    )
    assert change.detail["index"] == index
    assert change.detail["removed"] == {"rule": OLD_WEATHER_RULE}
    # Vietnamese stays readable in the file (not \u escapes)
    assert NEW_WEATHER_RULE.encode() in change.content


@pytest.mark.parametrize("old_rule", [None, "", "- Quy tắc này không có trong file"])
def test_json_appends_when_old_rule_absent(rules_dir: Path, old_rule: str | None) -> None:
    content = (rules_dir / "fashion_rules.json").read_bytes()
    before = json.loads(content)

    change = JsonRuleDocument.parse(content).apply(new_rule=NEW_WEATHER_RULE, old_rule=old_rule, entry=ENTRY)

    assert change.outcome is DeployOutcome.APPENDED
    after = json.loads(change.content)
    assert after["version"] == before["version"] + 1
    assert after["rules"][:-1] == before["rules"]
    assert after["rules"][-1] == {"rule": NEW_WEATHER_RULE, **ENTRY}
    assert change.detail["index"] == len(before["rules"])


@pytest.mark.parametrize(
    "new_rule",
    [
        SHIPPED_JSON_RULE,
        SHIPPED_JSON_RULE + "   ",
        unicodedata.normalize("NFD", SHIPPED_JSON_RULE),
    ],
    ids=["same", "trailing-space", "decomposed"],
)
@pytest.mark.parametrize("old_rule", [None, OLD_WEATHER_RULE])
def test_json_noop_when_new_rule_already_present(rules_dir: Path, new_rule: str, old_rule: str | None) -> None:
    content = (rules_dir / "fashion_rules.json").read_bytes()
    document = JsonRuleDocument.parse(content)
    data_before = json.loads(json.dumps(document.data))

    change = document.apply(new_rule=new_rule, old_rule=old_rule, entry=ENTRY)

    assert change.outcome is DeployOutcome.NOOP
    assert not change.touches_file
    assert change.content == b""
    assert document.data == data_before
    assert (rules_dir / "fashion_rules.json").read_bytes() == content


def test_json_apply_keeps_unknown_keys_and_does_not_mutate_the_document() -> None:
    original = {
        "version": 7,
        "description": "rules for the stylist bot",
        "rules": [{"rule": "- a", "note": "hand-written"}, {"rule": "- b"}],
    }
    document = JsonRuleDocument.parse(json.dumps(original).encode())

    change = document.apply(new_rule="- c", old_rule="- b", entry=ENTRY)

    after = json.loads(change.content)
    assert after["description"] == "rules for the stylist bot"
    assert after["version"] == 8
    assert after["rules"] == [{"rule": "- a", "note": "hand-written"}, {"rule": "- c", **ENTRY}]
    assert document.data == original


def test_json_empty_file_parses_as_no_rules_and_appends() -> None:
    document = JsonRuleDocument.parse(b"")
    assert document.rule_lines() == []
    change = document.apply(new_rule="- a", old_rule=None, entry=ENTRY)
    assert json.loads(change.content) == {"version": 1, "rules": [{"rule": "- a", **ENTRY}]}


def test_json_revert_of_replace_restores_exact_entry_at_its_position_and_keeps_later_rules(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    replaced = JsonRuleDocument.parse(original).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)
    later = JsonRuleDocument.parse(replaced.content).apply(new_rule="- Quy tắc sau", old_rule=None, entry=LATER_ENTRY)

    reverted = JsonRuleDocument.parse(later.content).revert(
        new_rule=NEW_WEATHER_RULE, change=stored(replaced.detail), keep_new=False, restore_old=True
    )

    assert reverted.outcome is DeployOutcome.REVERTED
    assert reverted.touches_file
    assert reverted.detail["removed_new"] is True
    assert reverted.detail["restored_old"] is True
    after = json.loads(reverted.content)
    assert after["rules"] == [*json_rules(original), {"rule": "- Quy tắc sau", **LATER_ENTRY}]
    assert after["version"] == json.loads(original)["version"] + 3


def test_json_revert_of_append_removes_only_that_rule(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    first = JsonRuleDocument.parse(original).apply(new_rule="- Một", old_rule=None, entry=ENTRY)
    second = JsonRuleDocument.parse(first.content).apply(new_rule="- Hai", old_rule=None, entry=LATER_ENTRY)

    reverted = JsonRuleDocument.parse(second.content).revert(
        new_rule="- Một", change=stored(first.detail), keep_new=False, restore_old=True
    )

    assert json_rules(reverted.content) == [*json_rules(original), {"rule": "- Hai", **LATER_ENTRY}]


def test_json_revert_keeps_the_line_when_keep_new(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    appended = JsonRuleDocument.parse(original).apply(new_rule="- Một", old_rule=None, entry=ENTRY)

    reverted = JsonRuleDocument.parse(appended.content).revert(
        new_rule="- Một", change=stored(appended.detail), keep_new=True, restore_old=True
    )

    assert reverted.outcome is DeployOutcome.REVERTED
    assert not reverted.touches_file
    assert reverted.detail["changed"] is False


def test_json_revert_of_replace_with_keep_new_restores_old_right_after_new(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    replaced = JsonRuleDocument.parse(original).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)
    index = replaced.detail["index"]

    reverted = JsonRuleDocument.parse(replaced.content).revert(
        new_rule=NEW_WEATHER_RULE, change=stored(replaced.detail), keep_new=True, restore_old=True
    )

    rules = json_rules(reverted.content)
    assert rules[index] == {"rule": NEW_WEATHER_RULE, **ENTRY}
    assert rules[index + 1] == {"rule": OLD_WEATHER_RULE}
    assert len(rules) == len(json_rules(original)) + 1


def test_json_revert_with_restore_old_false_leaves_old_out(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    replaced = JsonRuleDocument.parse(original).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)

    reverted = JsonRuleDocument.parse(replaced.content).revert(
        new_rule=NEW_WEATHER_RULE, change=stored(replaced.detail), keep_new=False, restore_old=False
    )

    lines = [entry["rule"] for entry in json_rules(reverted.content)]
    assert NEW_WEATHER_RULE not in lines
    assert OLD_WEATHER_RULE not in lines
    assert len(lines) == len(json_rules(original)) - 1


def test_json_revert_never_duplicates_an_old_rule_already_back(rules_dir: Path) -> None:
    original = (rules_dir / "fashion_rules.json").read_bytes()
    replaced = JsonRuleDocument.parse(original).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)
    # someone deployed the old line again meanwhile
    readded = JsonRuleDocument.parse(replaced.content).apply(new_rule=OLD_WEATHER_RULE, old_rule=None, entry=ENTRY)

    reverted = JsonRuleDocument.parse(readded.content).revert(
        new_rule=NEW_WEATHER_RULE, change=stored(replaced.detail), keep_new=False, restore_old=True
    )

    lines = [entry["rule"] for entry in json_rules(reverted.content)]
    assert lines.count(OLD_WEATHER_RULE) == 1
    assert NEW_WEATHER_RULE not in lines


@pytest.mark.parametrize("keep_new", [True, False])
def test_json_revert_of_noop_changes_nothing(rules_dir: Path, keep_new: bool) -> None:
    """A no-op deploy wrote nothing (the line was already there), so undoing it must not remove that line."""
    content = (rules_dir / "fashion_rules.json").read_bytes()
    document = JsonRuleDocument.parse(content)
    noop = document.apply(new_rule=SHIPPED_JSON_RULE, old_rule=None, entry=ENTRY)
    assert noop.outcome is DeployOutcome.NOOP

    reverted = document.revert(
        new_rule=SHIPPED_JSON_RULE,
        change=stored({**noop.detail, "provided_by": None}),
        keep_new=keep_new,
        restore_old=True,
    )

    assert not reverted.touches_file
    assert SHIPPED_JSON_RULE in document.rule_lines()


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"not json at all",
        b"[]",
        b'"rules"',
        b'{"version": 1}',
        b'{"version": 1, "rules": {}}',
        b'{"version": "2", "rules": []}',
        b'{"version": true, "rules": []}',
        b'{"version": 1.5, "rules": []}',
        b'{"version": 1, "rules": ["- a"]}',
        b'{"version": 1, "rules": [{"text": "- a"}]}',
        b'{"version": 1, "rules": [{"rule": 5}]}',
        b'\xff\xfe{"version": 1, "rules": []}',
        b'{"version": 1, "rules": [{"rule": "- \xc3("}]}',
    ],
)
def test_json_corrupt_or_wrong_schema_is_rule_file_invalid(content: bytes) -> None:
    with pytest.raises(RuleFileInvalid):
        JsonRuleDocument.parse(content)
    with pytest.raises(RuleFileInvalid):
        parse_rule_file("fashion_rules.json", content)


# ---------------------------------------------------------------------- text and Markdown documents

MARKDOWN = (
    "# Hướng dẫn\n"
    "\n"
    "Đoạn văn mở đầu - có gạch ngang giữa câu.\n"
    "-không phải quy tắc (thiếu dấu cách)\n"
    "  - mục lồng, không phải quy tắc\n"
    "* dấu sao, không phải quy tắc\n"
    "---\n"
    "## Phần 1\n"
    "- Quy tắc một\n"
    "- Quy tắc hai   \n"
    "\n"
    "## Phần 2\n"
    "- Quy tắc ba\n"
    "\n"
    "Lời kết, không phải quy tắc.\n"
).encode()


def test_markdown_only_dash_space_lines_are_rules() -> None:
    assert LineRuleDocument.parse(MARKDOWN).rule_lines() == ["- Quy tắc một", "- Quy tắc hai", "- Quy tắc ba"]


def test_markdown_append_goes_after_the_last_rule_and_keeps_everything_else() -> None:
    change = LineRuleDocument.parse(MARKDOWN).apply(new_rule="- Quy tắc bốn", old_rule=None, entry=ENTRY)

    assert change.outcome is DeployOutcome.APPENDED
    expected = MARKDOWN.replace("- Quy tắc ba\n".encode(), "- Quy tắc ba\n- Quy tắc bốn\n".encode())
    assert change.content == expected


def test_markdown_replace_changes_only_that_line() -> None:
    change = LineRuleDocument.parse(MARKDOWN).apply(new_rule="- Quy tắc mới", old_rule="- Quy tắc một", entry=ENTRY)

    assert change.outcome is DeployOutcome.REPLACED
    assert change.content == MARKDOWN.replace("- Quy tắc một\n".encode(), "- Quy tắc mới\n".encode())
    assert change.detail["removed"] == "- Quy tắc một\n"


def test_shipped_prompt_append_goes_after_last_rule_before_the_closing_prose(rules_dir: Path) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    new_rule = "- Dùng tối đa một emoji mỗi câu trả lời"

    change = parse_rule_file("prompt_v2.txt", original).apply(new_rule=new_rule, old_rule=None, entry=ENTRY)

    last = f"{PROMPT_LAST_RULE}\n".encode()
    assert original.count(last) == 1
    assert change.content == original.replace(last, last + f"{new_rule}\n".encode())


def test_shipped_prompt_replace_is_byte_exact_elsewhere(rules_dir: Path) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    new_rule = "- Trả lời tối đa 3 câu"

    change = parse_rule_file("prompt_v2.txt", original).apply(new_rule=new_rule, old_rule=PROMPT_RULE, entry=ENTRY)

    assert change.outcome is DeployOutcome.REPLACED
    assert change.content == original.replace(PROMPT_RULE.encode(), new_rule.encode())


def test_shipped_guidelines_append_at_end_and_replace_under_heading(rules_dir: Path) -> None:
    original = (rules_dir / "stylist_guidelines.md").read_bytes()
    document = parse_rule_file("stylist_guidelines.md", original)

    appended = document.apply(new_rule="- Tránh phối quá 2 họa tiết", old_rule=None, entry=ENTRY)
    assert appended.content == original + "- Tránh phối quá 2 họa tiết\n".encode()

    replaced = document.apply(new_rule="- Công sở: ưu tiên màu trung tính", old_rule=GUIDE_RULE, entry=ENTRY)
    assert replaced.content == original.replace(GUIDE_RULE.encode(), "- Công sở: ưu tiên màu trung tính".encode())


CRLF = b"# Quy tac\r\n\r\nGioi thieu\r\n- a\r\n- b\r\n\r\nKet thuc\r\n"


def test_crlf_file_keeps_crlf_on_replace_append_and_revert() -> None:
    replaced = LineRuleDocument.parse(CRLF).apply(new_rule="- x", old_rule="- a", entry=ENTRY)
    assert replaced.content == b"# Quy tac\r\n\r\nGioi thieu\r\n- x\r\n- b\r\n\r\nKet thuc\r\n"

    appended = LineRuleDocument.parse(replaced.content).apply(new_rule="- y", old_rule=None, entry=ENTRY)
    assert appended.content == b"# Quy tac\r\n\r\nGioi thieu\r\n- x\r\n- b\r\n- y\r\n\r\nKet thuc\r\n"

    reverted = LineRuleDocument.parse(appended.content).revert(
        new_rule="- x", change=stored(replaced.detail), keep_new=False, restore_old=True
    )
    assert reverted.content == b"# Quy tac\r\n\r\nGioi thieu\r\n- a\r\n- b\r\n- y\r\n\r\nKet thuc\r\n"


def test_crlf_rule_lines_have_no_carriage_returns() -> None:
    assert line_rules(CRLF) == ["- a", "- b"]


def test_text_noop_when_new_rule_present(rules_dir: Path) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    for new_rule in (PROMPT_RULE, PROMPT_RULE + "  ", unicodedata.normalize("NFD", PROMPT_RULE)):
        change = parse_rule_file("prompt_v2.txt", original).apply(new_rule=new_rule, old_rule=None, entry=ENTRY)
        assert change.outcome is DeployOutcome.NOOP
        assert not change.touches_file
        assert change.content == b""


def test_text_append_to_file_without_rules_or_trailing_newline() -> None:
    change = LineRuleDocument.parse(b"Intro line").apply(new_rule="- a", old_rule=None, entry=ENTRY)
    assert change.content == b"Intro line\n- a\n"
    assert line_rules(change.content) == ["- a"]


def test_text_revert_of_replace_restores_exact_line_and_keeps_later_rules(rules_dir: Path) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    replaced = parse_rule_file("prompt_v2.txt", original).apply(
        new_rule="- Trả lời tối đa 3 câu", old_rule=PROMPT_RULE, entry=ENTRY
    )
    later = parse_rule_file("prompt_v2.txt", replaced.content).apply(
        new_rule="- Quy tắc sau", old_rule=None, entry=LATER_ENTRY
    )

    reverted = parse_rule_file("prompt_v2.txt", later.content).revert(
        new_rule="- Trả lời tối đa 3 câu", change=stored(replaced.detail), keep_new=False, restore_old=True
    )

    last = f"{PROMPT_LAST_RULE}\n".encode()
    assert reverted.content == original.replace(last, last + "- Quy tắc sau\n".encode())


def test_text_revert_restores_a_last_line_that_had_no_newline_on_its_own_line() -> None:
    """Hand-edited files often lack the final newline; restoring that line must not glue it to the next rule."""
    original = b"# Rules\n- a\n- b"
    replaced = LineRuleDocument.parse(original).apply(new_rule="- x", old_rule="- b", entry=ENTRY)
    later = LineRuleDocument.parse(replaced.content).apply(new_rule="- y", old_rule=None, entry=LATER_ENTRY)

    reverted = LineRuleDocument.parse(later.content).revert(
        new_rule="- x", change=stored(replaced.detail), keep_new=False, restore_old=True
    )

    assert line_rules(reverted.content) == ["- a", "- b", "- y"]


def test_text_revert_of_append_removes_only_that_line(rules_dir: Path) -> None:
    original = (rules_dir / "stylist_guidelines.md").read_bytes()
    first = parse_rule_file("stylist_guidelines.md", original).apply(new_rule="- Một", old_rule=None, entry=ENTRY)
    second = parse_rule_file("stylist_guidelines.md", first.content).apply(new_rule="- Hai", old_rule=None, entry=ENTRY)

    reverted = parse_rule_file("stylist_guidelines.md", second.content).revert(
        new_rule="- Một", change=stored(first.detail), keep_new=False, restore_old=True
    )

    assert reverted.content == original + b"- Hai\n"


def test_text_revert_keeps_the_line_when_keep_new(rules_dir: Path) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    appended = parse_rule_file("prompt_v2.txt", original).apply(new_rule="- Một", old_rule=None, entry=ENTRY)

    reverted = parse_rule_file("prompt_v2.txt", appended.content).revert(
        new_rule="- Một", change=stored(appended.detail), keep_new=True, restore_old=True
    )

    assert not reverted.touches_file
    assert reverted.detail["removed_new"] is False


def test_text_revert_of_replace_with_keep_new_puts_old_line_right_after_new() -> None:
    replaced = LineRuleDocument.parse(MARKDOWN).apply(new_rule="- Mới", old_rule="- Quy tắc một", entry=ENTRY)

    reverted = LineRuleDocument.parse(replaced.content).revert(
        new_rule="- Mới", change=stored(replaced.detail), keep_new=True, restore_old=True
    )

    assert reverted.content == MARKDOWN.replace("- Quy tắc một\n".encode(), "- Mới\n- Quy tắc một\n".encode())


@pytest.mark.parametrize("keep_new", [True, False])
def test_text_revert_of_noop_changes_nothing(rules_dir: Path, keep_new: bool) -> None:
    original = (rules_dir / "prompt_v2.txt").read_bytes()
    document = parse_rule_file("prompt_v2.txt", original)
    noop = document.apply(new_rule=PROMPT_RULE, old_rule=None, entry=ENTRY)
    assert noop.outcome is DeployOutcome.NOOP

    reverted = document.revert(
        new_rule=PROMPT_RULE, change=stored({**noop.detail, "provided_by": None}), keep_new=keep_new, restore_old=True
    )

    assert not reverted.touches_file
    assert PROMPT_RULE in document.rule_lines()


@pytest.mark.parametrize("module", ["prompt_v2.txt", "stylist_guidelines.md"])
@pytest.mark.parametrize(
    "content", [b"- ok\n\xff\xfe broken\n", b"- \xc3(\n", b"- a\x00b\n"], ids=["ff", "truncated", "nul"]
)
def test_text_invalid_utf8_or_nul_is_rule_file_invalid(module: str, content: bytes) -> None:
    with pytest.raises(RuleFileInvalid):
        parse_rule_file(module, content)


def test_parse_rule_file_dispatches_on_extension() -> None:
    assert isinstance(parse_rule_file("fashion_rules.json", b'{"rules": []}'), JsonRuleDocument)
    text = parse_rule_file("prompt_v2.txt", b'{"rules": [{"rule": "- a"}]}')
    assert isinstance(text, LineRuleDocument)
    assert text.rule_lines() == []
    with pytest.raises(RuleFileInvalid):
        parse_rule_file("fashion_rules.json", b"- a\n")


# ---------------------------------------------------------------------- RuleFiles: paths and reading


def rule_files(rules_dir: Path, backup_keep: int = 50) -> RuleFiles:
    return RuleFiles(rules_dir, DEFAULT_ALLOWED_MODULES, backup_keep=backup_keep)


@pytest.mark.parametrize("module", DEFAULT_ALLOWED_MODULES)
def test_path_for_allowed_module(rules_dir: Path, module: str) -> None:
    assert rule_files(rules_dir).path_for(module) == rules_dir / module


@pytest.mark.parametrize(
    "module",
    [
        "../x",
        "/etc/passwd",
        "sub/fashion_rules.json",
        "../fashion_rules.json",
        "./fashion_rules.json",
        "fashion_rules.json/..",
        "other_rules.json",
        "FASHION_RULES.JSON",
        "",
        "..",
    ],
)
def test_path_for_refuses_anything_not_allowed(rules_dir: Path, module: str) -> None:
    files = rule_files(rules_dir)
    with pytest.raises(InvalidInput, match="not an allowed rule file"):
        files.path_for(module)
    with pytest.raises(InvalidInput):
        files.read(module)
    with pytest.raises(InvalidInput):
        files.acquire(module)
    with pytest.raises(InvalidInput):
        files.write(module, b"x", b"", "RUL-1001")


@pytest.mark.parametrize("module", ["../x", "/etc/passwd", "sub/fashion_rules.json", ".."])
def test_path_for_refuses_paths_even_when_listed_as_allowed(rules_dir: Path, module: str) -> None:
    """Defence in depth: a misconfigured allowed list must still not reach outside the rules folder."""
    files = RuleFiles(rules_dir, (*DEFAULT_ALLOWED_MODULES, module))
    with pytest.raises(InvalidInput):
        files.path_for(module)


def test_read_returns_bytes_and_parsed_document(rules_dir: Path) -> None:
    content, document = rule_files(rules_dir).read("fashion_rules.json")
    assert content == (rules_dir / "fashion_rules.json").read_bytes()
    assert OLD_WEATHER_RULE in document.rule_lines()


def test_read_of_missing_file_is_empty(rules_dir: Path) -> None:
    (rules_dir / "prompt_v2.txt").unlink()
    content, document = rule_files(rules_dir).read("prompt_v2.txt")
    assert content == b""
    assert document.rule_lines() == []


@pytest.mark.parametrize(
    ("module", "content"),
    [
        ("fashion_rules.json", b'{"version": 1, "rules": [{"rule": "- a"},'),
        ("fashion_rules.json", b'{"version": 1, "rules": "- a"}'),
        ("prompt_v2.txt", b"- a\n\xff\n"),
        ("stylist_guidelines.md", b"# T\n- \xe1\xbb\n"),
    ],
)
def test_read_of_corrupt_file_raises_and_leaves_it_alone(rules_dir: Path, module: str, content: bytes) -> None:
    (rules_dir / module).write_bytes(content)
    files = rule_files(rules_dir)

    with pytest.raises(RuleFileInvalid, match=module) as caught:
        files.read(module)

    assert caught.value.code == "rule_file_invalid"
    assert (rules_dir / module).read_bytes() == content
    current = files.current_rules()
    assert current[module] == []
    others = [name for name in DEFAULT_ALLOWED_MODULES if name != module]
    assert all(current[name] for name in others)


def test_read_of_a_directory_is_rule_file_invalid(rules_dir: Path) -> None:
    (rules_dir / "prompt_v2.txt").unlink()
    (rules_dir / "prompt_v2.txt").mkdir()
    with pytest.raises(RuleFileInvalid):
        rule_files(rules_dir).read("prompt_v2.txt")


def test_current_rules_lists_every_allowed_file(rules_dir: Path) -> None:
    current = rule_files(rules_dir).current_rules()
    assert set(current) == set(DEFAULT_ALLOWED_MODULES)
    assert OLD_WEATHER_RULE in current["fashion_rules.json"]
    assert PROMPT_RULE in current["prompt_v2.txt"]
    assert GUIDE_RULE in current["stylist_guidelines.md"]
    assert all(line.startswith("- ") for lines in current.values() for line in lines)


# ---------------------------------------------------------------------- RuleFiles: writing


def stray_files(rules_dir: Path) -> set[str]:
    return {entry.name for entry in rules_dir.iterdir()} - {*DEFAULT_ALLOWED_MODULES, ".autotrain"}


def test_write_replaces_content_and_keeps_a_backup_of_the_previous_bytes(rules_dir: Path) -> None:
    files = rule_files(rules_dir)
    path = rules_dir / "fashion_rules.json"
    previous = path.read_bytes()
    new = JsonRuleDocument.parse(previous).apply(new_rule=NEW_WEATHER_RULE, old_rule=OLD_WEATHER_RULE, entry=ENTRY)

    with files.locked("fashion_rules.json"):
        backup = Path(files.write("fashion_rules.json", new.content, previous, "RUL-1001"))

    assert path.read_bytes() == new.content
    assert backup.read_bytes() == previous
    assert backup.parent == files.backup_dir("fashion_rules.json")
    assert backup.is_relative_to(rules_dir / ".autotrain")
    assert "RUL-1001" in backup.name
    assert stray_files(rules_dir) == set()
    assert not list(rules_dir.glob("*.tmp")) and not list(rules_dir.glob(".*.tmp"))


def test_write_keeps_the_file_mode(rules_dir: Path) -> None:
    path = rules_dir / "prompt_v2.txt"
    path.chmod(0o640)
    previous = path.read_bytes()
    rule_files(rules_dir).write("prompt_v2.txt", previous + b"- new\n", previous, "RUL-1001")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_creates_a_missing_file(rules_dir: Path) -> None:
    path = rules_dir / "stylist_guidelines.md"
    path.unlink()
    backup = rule_files(rules_dir).write("stylist_guidelines.md", b"- a\n", b"", "RUL-1001")
    assert path.read_bytes() == b"- a\n"
    assert Path(backup).read_bytes() == b""


def test_backups_are_pruned_to_backup_keep(rules_dir: Path) -> None:
    files = rule_files(rules_dir, backup_keep=2)
    path = rules_dir / "prompt_v2.txt"
    versions = [path.read_bytes()] + [f"- version {n}\n".encode() for n in range(1, 5)]

    for n in range(1, 5):
        files.write("prompt_v2.txt", versions[n], path.read_bytes(), f"RUL-100{n}")

    backups = sorted(files.backup_dir("prompt_v2.txt").glob("*.bak"))
    assert len(backups) == 2
    assert [backup.read_bytes() for backup in backups] == [versions[2], versions[3]]
    assert path.read_bytes() == versions[4]
    assert stray_files(rules_dir) == set()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG (like a full disk); works for root too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_write_that_fails_raises_and_leaves_the_old_file_intact(rules_dir: Path) -> None:
    """A read-only folder for an ordinary user; as root (who ignores permissions) a write that runs out of room."""
    files = rule_files(rules_dir)
    path = rules_dir / "fashion_rules.json"
    old = path.read_bytes()
    big = b'{"version": 2, "rules": []}' + b" " * 300_000

    if os.geteuid() != 0:
        rules_dir.chmod(0o555)
        try:
            with pytest.raises(RuleFileWriteFailed) as caught:
                files.write("fashion_rules.json", big, old, "RUL-1001")
        finally:
            rules_dir.chmod(0o755)
    else:
        with file_size_limit(64 * 1024), pytest.raises(RuleFileWriteFailed) as caught:
            files.write("fashion_rules.json", big, old, "RUL-1001")

    assert caught.value.code == "rule_file_write_failed"
    assert "unchanged" in caught.value.message
    assert path.read_bytes() == old
    assert stray_files(rules_dir) == set()


def test_write_fails_cleanly_when_the_backup_cannot_be_made(rules_dir: Path) -> None:
    (rules_dir / ".autotrain").write_text("a file where the state folder should be")
    path = rules_dir / "prompt_v2.txt"
    old = path.read_bytes()

    with pytest.raises(RuleFileWriteFailed):
        rule_files(rules_dir).write("prompt_v2.txt", b"- new\n", old, "RUL-1001")

    assert path.read_bytes() == old
    assert stray_files(rules_dir) == set()


def test_write_onto_a_directory_fails_and_leaves_no_temp_file(rules_dir: Path) -> None:
    target = rules_dir / "stylist_guidelines.md"
    target.unlink()
    target.mkdir()
    (target / "keep").write_text("x")

    with pytest.raises(RuleFileWriteFailed):
        rule_files(rules_dir).write("stylist_guidelines.md", b"- a\n", b"", "RUL-1001")

    assert target.is_dir() and (target / "keep").read_text() == "x"
    assert stray_files(rules_dir) == set()


# ---------------------------------------------------------------------- RuleFiles: locking


def _acquire_in_thread(files: RuleFiles, module: str) -> tuple[threading.Thread, threading.Event, threading.Event]:
    acquired, done = threading.Event(), threading.Event()

    def worker() -> None:
        handle = files.acquire(module)
        acquired.set()
        done.wait(5)
        files.release(handle)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread, acquired, done


def test_acquire_blocks_a_second_holder_until_release(rules_dir: Path) -> None:
    files = rule_files(rules_dir)
    handle = files.acquire("fashion_rules.json")
    try:
        # another RuleFiles on the same folder: the lock is on the file, not on the object
        thread, acquired, done = _acquire_in_thread(rule_files(rules_dir), "fashion_rules.json")
        assert not acquired.wait(0.3), "second acquire got the lock while the first was held"
    finally:
        files.release(handle)
    assert acquired.wait(5), "second acquire did not get the lock after release"
    done.set()
    thread.join(5)
    assert not thread.is_alive()


def test_locked_context_blocks_others_only_for_the_same_file(rules_dir: Path) -> None:
    files = rule_files(rules_dir)
    with files.locked("prompt_v2.txt"):
        other_thread, other_acquired, other_done = _acquire_in_thread(files, "stylist_guidelines.md")
        assert other_acquired.wait(5), "a lock on another file was blocked"
        other_done.set()
        same_thread, same_acquired, same_done = _acquire_in_thread(files, "prompt_v2.txt")
        assert not same_acquired.wait(0.3)
    assert same_acquired.wait(5)
    same_done.set()
    for thread in (other_thread, same_thread):
        thread.join(5)
        assert not thread.is_alive()


def test_lock_files_live_in_the_state_folder(rules_dir: Path) -> None:
    files = rule_files(rules_dir)
    with files.locked("fashion_rules.json"):
        assert (rules_dir / ".autotrain" / "locks" / "fashion_rules.json.lock").exists()
    assert stray_files(rules_dir) == set()
