"""Checks every proposal passes before it becomes a rule, whichever generator wrote it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from difflib import get_close_matches

from autotrain.content_checks import content_warnings, duplicate_warning
from autotrain.errors import InvalidInput
from autotrain.i18n import N_
from autotrain.models import Rule, RuleProposal, RuleWarning, clean_text
from autotrain.rulefiles import normalize_rule_line, rule_key
from autotrain.text import fold

LOW_CONFIDENCE = 0.6
CLOSEST_CUTOFF = 0.6  # difflib's ratio a line of the file needs to be offered as "did you mean"

# module → rule line (as `rule_key` keys it) → the id of the deployed rule that line is
RuleIds = Mapping[str, Mapping[str, str]]


def deployed_rule_ids(rules: Iterable[Rule]) -> dict[str, dict[str, str]]:
    """Which rule each deployed line is (a JSON entry's `rule_id` is the same id; a text file has none)."""
    ids: dict[str, dict[str, str]] = {}
    for rule in rules:
        ids.setdefault(rule.module_name, {})[rule_key(rule.new_rule)] = rule.rule_id
    return ids


def quoted(line: str) -> str:
    return f"“{line.strip()}”"


def validate_proposal(
    proposal: RuleProposal,
    current_rules: Mapping[str, Sequence[str]],
    allowed_modules: Sequence[str],
    *,
    feedback_texts: Sequence[str] = (),
    check_copy: bool = True,
    admin_edit: bool = False,
    rule_ids: RuleIds | None = None,
) -> RuleProposal:
    """Clean and normalise the lines, clamp confidence, and attach warnings with what each is about
    (`warning_details`). Raises InvalidInput when unusable.

    Every rule text passes here, a generator's and an admin's edit (Slack or REST) alike, and is cleaned with
    the same `clean_text` as feedback (invisible and control characters dropped, NFC) before any check.

    `feedback_texts` are the untrusted texts the rule came from: injection phrases in them flag the rule, and
    with `check_copy` a rule that copies them verbatim is flagged too.

    `admin_edit`: an admin wrote this wording, so there is no confidence warning, and the rule to replace must
    be in the file — found ignoring case and accents when it is not there exactly; otherwise it is refused
    (InvalidInput with `field="old_rule"` and the `closest` line), never turned into an append. A generator's
    proposal of a line not in the file becomes an append with OLD_RULE_NOT_FOUND.

    `rule_ids` names a duplicated line by the deployed rule it is (`deployed_rule_ids`); else it is quoted.
    """
    if proposal.module_name not in allowed_modules:
        raise InvalidInput(
            N_("module '{module}' is not an allowed rule file"), module=proposal.module_name, field="module_name"
        )
    module_name = proposal.module_name
    warnings = list(dict.fromkeys(proposal.warnings))
    details = dict(proposal.warning_details)
    new_rule = normalize_rule_line(_clean(proposal.new_rule))
    lines = list(current_rules.get(module_name, ()))
    old_rule: str | None = None
    if proposal.old_rule and proposal.old_rule.strip():
        candidate = normalize_rule_line(_clean(proposal.old_rule))
        old_rule = _line_to_replace(candidate, lines, module_name, admin_edit=admin_edit)
        if old_rule is None:
            # The rule to replace is not in the file: deploying appends instead, and the card says so.
            warnings.append(RuleWarning.OLD_RULE_NOT_FOUND)
            details[RuleWarning.OLD_RULE_NOT_FOUND.value] = quoted(candidate)
    if old_rule == new_rule:
        old_rule = None
    confidence = min(1.0, max(0.0, float(proposal.confidence)))
    if confidence < LOW_CONFIDENCE and not admin_edit:
        warnings.append(RuleWarning.LOW_CONFIDENCE)
    # the line it replaces does not count as a duplicate of its replacement
    existing = [(module, line) for module, rules in current_rules.items() for line in rules if line.strip() != old_rule]
    duplicate = duplicate_warning(new_rule, (line for _, line in existing))
    if duplicate is not None:
        warnings.append(duplicate.warning)
        module = next(module for module, line in existing if line == duplicate.line)
        rule_id = (rule_ids or {}).get(module, {}).get(rule_key(duplicate.line))
        what = rule_id if rule_id and duplicate.warning is RuleWarning.DUPLICATE else quoted(duplicate.line)
        details[duplicate.warning.value] = f"{what} — {module}"
    warnings.extend(content_warnings(new_rule, feedback_texts=feedback_texts, check_copy=check_copy))
    kept = list(dict.fromkeys(warnings))
    return proposal.model_copy(
        update={
            "new_rule": new_rule,
            "old_rule": old_rule,
            "confidence": round(confidence, 4),
            "warnings": kept,
            "warning_details": {key: value for key, value in details.items() if key in kept},
            "reasoning": " ".join(_clean(proposal.reasoning).split())[:2000],
        }
    )


def _line_to_replace(candidate: str, lines: Sequence[str], module_name: str, *, admin_edit: bool) -> str | None:
    """The file's own spelling of the line `candidate` names, or None (a generator's line not in the file)."""
    # Compare cleaned (NFC, trimmed, no invisible characters) and keep the file's own spelling of the line.
    exact = next((line for line in lines if _clean(line.strip()) == candidate), None)
    if exact is not None:
        return exact.strip()
    if not admin_edit:
        return None
    # an admin types "- luon uu tien ao khoac/day" for "- Luôn ưu tiên áo khoác/dày": the same line
    folded = fold(candidate)
    same = list(dict.fromkeys(line.strip() for line in lines if fold(line) == folded))
    if len(same) == 1:
        return same[0]
    if same:
        raise InvalidInput(
            N_(
                "the rule to replace matches {count} lines of {module} once case and accents are ignored;"
                " copy it exactly from the file"
            ),
            count=len(same),
            module=module_name,
            old_rule=candidate,
            field="old_rule",
        )
    closest = closest_line(candidate, lines)
    if closest is None:
        raise InvalidInput(
            N_("the rule to replace, “{old_rule}”, is not in {module}"),
            old_rule=candidate,
            module=module_name,
            field="old_rule",
        )
    raise InvalidInput(
        N_("the rule to replace is not in {module}; did you mean “{closest}”?"),
        module=module_name,
        old_rule=candidate,
        closest=closest,
        field="old_rule",
    )


def closest_line(text: str, lines: Sequence[str]) -> str | None:
    """The file's line most like `text` (ignoring case and accents), when one is close enough to suggest."""
    by_folded: dict[str, str] = {}
    for line in lines:
        by_folded.setdefault(fold(line), line.strip())
    found = get_close_matches(fold(text), list(by_folded), n=1, cutoff=CLOSEST_CUTOFF)
    return by_folded[found[0]] if found else None


def _clean(text: str) -> str:
    return str(clean_text(text))
