"""Checks every proposal passes before it becomes a rule, whichever generator wrote it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autotrain.content_checks import content_warnings, duplicate_warning
from autotrain.errors import InvalidInput
from autotrain.models import RuleProposal, RuleWarning, clean_text
from autotrain.rulefiles import normalize_rule_line

LOW_CONFIDENCE = 0.6


def validate_proposal(
    proposal: RuleProposal,
    current_rules: Mapping[str, Sequence[str]],
    allowed_modules: Sequence[str],
    *,
    feedback_texts: Sequence[str] = (),
    check_copy: bool = True,
) -> RuleProposal:
    """Clean and normalise the lines, clamp confidence, and attach warnings. Raises InvalidInput when unusable.

    Every rule text passes here, a generator's and an admin's edit (Slack or REST) alike, and is cleaned with
    the same `clean_text` as feedback (invisible and control characters dropped, NFC) before any check.

    `feedback_texts` are the untrusted texts the rule came from: injection phrases in them flag the rule, and
    with `check_copy` a rule that copies them verbatim is flagged too.
    """
    if proposal.module_name not in allowed_modules:
        raise InvalidInput(f"module {proposal.module_name!r} is not an allowed rule file")
    warnings = list(dict.fromkeys(proposal.warnings))
    new_rule = normalize_rule_line(_clean(proposal.new_rule))
    lines = list(current_rules.get(proposal.module_name, ()))
    old_rule: str | None = None
    if proposal.old_rule and proposal.old_rule.strip():
        candidate = normalize_rule_line(_clean(proposal.old_rule))
        # Compare cleaned (NFC, trimmed, no invisible characters) and keep the file's own spelling of the line.
        in_file = next((line for line in lines if _clean(line.strip()) == candidate), None)
        if in_file is not None:
            old_rule = in_file.strip()
        else:
            # The rule to replace is not in the file: deploying appends instead, and the card says so.
            warnings.append(RuleWarning.OLD_RULE_NOT_FOUND)
    if old_rule == new_rule:
        old_rule = None
    confidence = min(1.0, max(0.0, float(proposal.confidence)))
    if confidence < LOW_CONFIDENCE:
        warnings.append(RuleWarning.LOW_CONFIDENCE)
    # the line it replaces does not count as a duplicate of its replacement
    existing = [line for rules in current_rules.values() for line in rules if line.strip() != old_rule]
    duplicate = duplicate_warning(new_rule, existing)
    if duplicate is not None:
        warnings.append(duplicate)
    warnings.extend(content_warnings(new_rule, feedback_texts=feedback_texts, check_copy=check_copy))
    return proposal.model_copy(
        update={
            "new_rule": new_rule,
            "old_rule": old_rule,
            "confidence": round(confidence, 4),
            "warnings": list(dict.fromkeys(warnings)),
            "reasoning": " ".join(_clean(proposal.reasoning).split())[:2000],
        }
    )


def _clean(text: str) -> str:
    return str(clean_text(text))
