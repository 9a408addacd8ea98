"""Block Kit builders: rule cards, modals, ephemeral replies and the App Home tab.

Everything a user typed is escaped for mrkdwn (`&`, `<`, `>`), so feedback text cannot ping a channel or
forge a link, and clipped to Slack's limits (section text 3,000, header 150, 50 blocks a message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from autotrain.evaluation import Evaluation, EvaluationStatus
from autotrain.i18n import N_, _, ngettext, number
from autotrain.models import (
    Deployment,
    DeployOutcome,
    Feedback,
    FeedbackType,
    Rule,
    RuleStatus,
    RuleWarning,
    RunAllSummary,
    StatusReport,
)
from autotrain.monitoring import Metrics
from autotrain.policy import RuleAction, approval_invited, rule_actions, rule_flags
from autotrain.settings import Settings

Block = dict[str, Any]

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
INPUT_LIMIT = 3000  # Slack's plain_text_input max_length
MESSAGE_BLOCK_LIMIT = 50

FEEDBACK_CALLBACK = "feedback_submit"
EDIT_CALLBACK = "rule_edit_submit"

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")

STATUS_EMOJI = {
    RuleStatus.PENDING: "🟡",
    RuleStatus.APPROVED: "🔵",
    RuleStatus.DEPLOYED: "🟢",
    RuleStatus.ROLLED_BACK: "↩️",
    RuleStatus.REJECTED: "⛔",
}

# Each warning that is not a flag (those are FLAG_NAME) in plain words; with its detail when known
# (`Rule.warning_details`: the line or the rule it is about).
WARNING_TEXT = {
    RuleWarning.OLD_RULE_NOT_FOUND: N_("The rule it replaces is not in the file: deploying will append it instead."),
    RuleWarning.DUPLICATE: N_("This rule is already in a rule file: deploying it changes nothing."),
    RuleWarning.NEAR_DUPLICATE: N_("Almost the same as a rule already in a file."),
    RuleWarning.LOW_CONFIDENCE: N_("Low confidence: edit the wording before approving."),
    RuleWarning.EXISTING_RULE_NOT_FOLLOWED: N_(
        "The complaint is about a rule already in the file that the bot did not follow: a prompt change may not be"
        " the fix."
    ),
    RuleWarning.RECURRENCE_OF_DEPLOYED_RULE: N_("The same complaint came back after a rule for it was deployed."),
    RuleWarning.CONFLICTS_WITH_RULE: N_("It contradicts a rule already deployed in this file (see the replay line)."),
}
WARNING_DETAIL_TEXT = {
    RuleWarning.OLD_RULE_NOT_FOUND: N_(
        "The rule it replaces ({detail}) is not in the file: deploying will append it instead."
    ),
    RuleWarning.DUPLICATE: N_("This rule is already in a rule file ({detail}): deploying it changes nothing."),
    RuleWarning.NEAR_DUPLICATE: N_("Almost the same as a rule already in a file: {detail}"),
    RuleWarning.CONFLICTS_WITH_RULE: N_("It contradicts a rule already deployed in this file: {detail}"),
}
# A flag's short name, for the card's first line and the approve confirmation.
FLAG_NAME = {
    RuleWarning.POSSIBLE_INJECTION: N_("possible prompt injection"),
    RuleWarning.FLAGGED_CONTENT: N_("feedback flagged by the content filter"),
    RuleWarning.CONTAINS_URL: N_("contains a link"),
    RuleWarning.CONTAINS_CODE: N_("contains code or markup"),
    RuleWarning.CONTAINS_SECRET: N_("contains a password or key"),
    RuleWarning.COPIED_FEEDBACK: N_("copies the feedback word for word"),
}

HELP_TEXT = N_(
    "*Auto-Train* turns feedback about the chatbot into reviewed rule changes.\n"
    "• `/autotrain feedback [text]` — report a problem (opens a form)\n"
    "• `/autotrain status` — counts, backlog, last deployments\n"
    "• `/autotrain rules [pending|approved|deployed|rejected|rolled_back|all]` — list rules (default: pending)\n"
    "• `/autotrain digest` — the digest of the last 24 hours\n"
    "• `/autotrain run-all` — generate rules for all pending feedback _(admins)_\n"
    "• `/autotrain rollback RUL-1234` — undo a deployed rule _(admins)_\n"
    "• `/autotrain help` — this message\n"
    "You can also report any message with the *Report to Auto-Train* message shortcut."
)


# ---------------------------------------------------------------------- text helpers


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters; never cuts an escaped entity (&amp; &lt; &gt;) in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 4))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + "…"


def escaped(text: str, limit: int) -> str:
    """User text made safe for mrkdwn, then clipped so the escaping cannot push it past `limit`."""
    return clip(escape(text), limit)


def quote(text: str, limit: int) -> str:
    """Escaped, clipped, as a mrkdwn block quote."""
    body = escaped(text.strip(), limit) or "_(empty)_"
    return "\n".join(f">{line}" for line in body.splitlines())


def who(actor_id: str | None) -> str:
    if not actor_id:
        return _("someone")
    if actor_id == "system":
        return "Auto-Train"
    if actor_id == "auto-approve":
        return _("Auto-Train (auto-approve: confident, no warnings)")
    if actor_id == "auto-canary":
        return _("Auto-Train (auto-canary, on the evidence)")
    return f"<@{actor_id}>" if _SLACK_USER.match(actor_id) else f"`{escaped(actor_id, 60)}`"


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def percent(value: float) -> str:
    return f"{round(value * 100)} %"


def mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text}


def plain(text: str, limit: int = 75) -> Block:
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(clip(text, SECTION_LIMIT))}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(clip(text, SECTION_LIMIT)) for text in texts[:10]]}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, HEADER_LIMIT)}


def _rule_text(line: str | None) -> str:
    """A rule line without its "- " bullet, for diffs."""
    if not line:
        return ""
    return line[2:] if line.startswith("- ") else line


# ---------------------------------------------------------------------- rule card


def confirm_dialog(title: str, text: str, confirm: str, style: str | None = None) -> Block:
    dialog: Block = {"title": plain(title, 100), "text": plain(text, 300), "confirm": plain(confirm, 30)}
    dialog["deny"] = plain(_("Cancel"), 30)
    if style:
        dialog["style"] = style
    return dialog


def button(action_id: str, label: str, rule_id: str, style: str | None = None, confirm: Block | None = None) -> Block:
    element: Block = {"type": "button", "action_id": action_id, "text": plain(label), "value": rule_id}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


RULE_ACTION_IDS = {
    RuleAction.APPROVE: "rule_approve",
    RuleAction.EDIT: "rule_edit",
    RuleAction.REJECT: "rule_reject",
    RuleAction.DEPLOY: "rule_deploy",
    RuleAction.CANARY: "rule_deploy_canary",
    RuleAction.PROMOTE: "rule_promote",
    RuleAction.ROLLBACK: "rule_rollback",
    RuleAction.DEPLOY_OVERRIDE: "rule_deploy_override",
}
# A flagged rule's Approve: its confirmation names the flags, and the click acknowledges them (the plain
# `rule_approve` of a rule flagged since its card was drawn is refused, and the card redrawn with this one).
APPROVE_FLAGGED_ACTION_ID = "rule_approve_flagged"


def flag_names(rule: Rule) -> str:
    return ", ".join(_(FLAG_NAME[w]) for w in rule_flags(rule))


def _approve_button(rule: Rule) -> Block:
    if rule.flagged:
        text = _(
            "{rule_id} is flagged: {flags}. Approve it only if you have read the rule and the feedback and want it"
            " as it is; the audit log records that you acknowledged the flags.",
            rule_id=rule.rule_id,
            flags=flag_names(rule),
        )
        confirm = confirm_dialog(_("Approve a flagged rule?"), text, _("Approve anyway"), "danger")
        return button(APPROVE_FLAGGED_ACTION_ID, _("Approve (flagged)"), rule.rule_id, None, confirm)
    style = "primary" if approval_invited(rule) else None
    return button(RULE_ACTION_IDS[RuleAction.APPROVE], _("Approve"), rule.rule_id, style)


def _rule_button(action: RuleAction, rule: Rule, *, canary_percent: int) -> Block:
    """The card's button for one action; what changes a file or closes the rule asks to confirm first."""
    rule_id = rule.rule_id
    action_id = RULE_ACTION_IDS[action]
    module = rule.module_name
    match action:
        case RuleAction.APPROVE:
            return _approve_button(rule)
        case RuleAction.EDIT:
            return button(action_id, _("Edit"), rule_id)
        case RuleAction.DEPLOY:
            text = _("{module} will be changed now, for every user, and the chatbot told to reload.", module=module)
            confirm = confirm_dialog(_("Deploy {rule_id}?", rule_id=rule_id), text, _("Deploy"), "primary")
            return button(action_id, _("All users"), rule_id, "primary", confirm)
        case RuleAction.CANARY:
            text = _(
                "{percent} % of users get the new rule first; the others keep the current rules.",
                percent=canary_percent,
            )
            confirm = confirm_dialog(_("Canary {rule_id}?", rule_id=rule_id), text, _("Start canary"), "primary")
            return button(action_id, _("Canary {percent} %", percent=canary_percent), rule_id, None, confirm)
        case RuleAction.PROMOTE:
            text = _("Every user gets the new rule; the rule it replaces goes.")
            confirm = confirm_dialog(_("Promote {rule_id}?", rule_id=rule_id), text, _("Promote"), "primary")
            return button(action_id, _("Promote to 100 %"), rule_id, "primary", confirm)
        case RuleAction.ROLLBACK:
            text = _("The change to {module} will be reverted.", module=module)
            confirm = confirm_dialog(_("Roll back {rule_id}?", rule_id=rule_id), text, _("Roll back"), "danger")
            return button(action_id, _("Roll back"), rule_id, "danger", confirm)
        case RuleAction.DEPLOY_OVERRIDE:
            text = _(
                "Its replay has not passed. {module} will be changed for every user anyway, and the audit log records"
                " that you overrode the check.",
                module=module,
            )
            title = _("Deploy {rule_id} without a passed replay?", rule_id=rule_id)
            confirm = confirm_dialog(title, text, _("Deploy anyway"), "danger")
            return button(action_id, _("Deploy anyway"), rule_id, "danger", confirm)
        case RuleAction.REJECT:
            text = _("The rule will not be deployed and its feedback is closed.")
            confirm = confirm_dialog(_("Reject {rule_id}?", rule_id=rule_id), text, _("Reject"), "danger")
            return button(action_id, _("Reject"), rule_id, "danger", confirm)
    assert_never(action)


def rule_buttons(rule: Rule, *, canary_percent: int, evaluation_required: bool = False) -> list[Block]:
    """One button for each action the policy allows the rule (`rule_actions`), in its order."""
    actions = rule_actions(rule, evaluation_required=evaluation_required)
    return [_rule_button(action, rule, canary_percent=canary_percent) for action in actions]


EVALUATION_MARK = {
    EvaluationStatus.PASSED: "🧪✅",
    EvaluationStatus.FAILED: "🧪❌",
    EvaluationStatus.SKIPPED: "🧪",
    EvaluationStatus.ERROR: "🧪⚠️",
}


def evaluation_section(evaluation: Evaluation) -> Block:
    """The card's one line about the replay, with a button to see the answers side by side."""
    text = f"{EVALUATION_MARK[evaluation.status]} {escaped(evaluation.summary, 400)}"
    if evaluation.conflicts:
        lines = "; ".join(f"`{escaped(c, 150)}`" for c in evaluation.conflicts[:2])
        text += "\n⚠️ " + _("Contradicts a deployed rule: {lines}", lines=lines)
    if evaluation.revised_from:
        text += "\n✏️ " + _("Revised from: {line}", line=f"`{escaped(evaluation.revised_from, 200)}`")
    block = section(text)
    if evaluation.detail:
        block["accessory"] = {
            "type": "button",
            "action_id": "rule_show_replays",
            "text": plain(_("Show replays")),
            "value": evaluation.rule_id,
        }
    return block


REPLAY_KIND = {"complaint": N_("Complaint"), "regression": N_("Earlier fix"), "praise": N_("Praised answer")}


def replays_modal(evaluation: Evaluation) -> Block:
    """Each replayed case: the question, the answer before and after, and the judge's verdict."""
    blocks: list[Block] = [section(f"*{evaluation.rule_id}* · {escaped(evaluation.summary, 300)}")]
    none = _("_(none)_")
    for case in evaluation.detail[:20]:
        mark = "✅" if case.holds else ("❌" if case.holds is False else "…")
        kind = _(REPLAY_KIND[case.kind.value])
        blocks += [
            {"type": "divider"},
            section(f"{mark} *{kind}* {case.feedback_id}: {quote(case.query, 300)}"),
            {
                "type": "section",
                "fields": [
                    mrkdwn("*" + _("Before") + "*\n" + (escaped(case.answer_before or "", 900) or none)),
                    mrkdwn("*" + _("After") + "*\n" + (escaped(case.answer_after or "", 900) or none)),
                ],
            },
            context(escaped(case.reason or "", 600) or _("_(no reason given)_")),
        ]
    return {
        "type": "modal",
        "title": plain(_("Replays"), 24),
        "close": plain(_("Close"), 24),
        "blocks": blocks[:100],
    }


def rule_diff(rule: Rule) -> str:
    new = escaped(_rule_text(rule.new_rule), 700)
    if rule.old_rule:
        old = escaped(_rule_text(rule.old_rule), 700)
        return "*" + _("Change") + "* (" + _("replace") + f")\n```− {old}\n+ {new}```"
    return "*" + _("Change") + "* (" + _("append") + f")\n```+ {new}```"


RELOAD_TEXT = {"ok": N_("chatbot reloaded"), "failed": N_("⚠️ chatbot reload failed")}


def deployment_summary(deployment: Deployment) -> str | None:
    """What a deploy or rollback did to the file, in words, when it was not the plain change the card shows:
    a no-op, or a rollback that left the line because another deployed rule has it too."""
    module = f"`{escape(deployment.module_name)}`"
    if deployment.outcome is DeployOutcome.NOOP:
        provider = deployment.change.get("provided_by")
        if provider:
            return _(
                "ℹ️ The line was already in {module} (from {provider}): the file was not changed.",
                module=module,
                provider=provider,
            )
        return _("ℹ️ The line was already in {module}: the file was not changed.", module=module)
    kept_by = deployment.change.get("kept_by")
    if deployment.rollback_of is not None and kept_by:
        return _(
            "ℹ️ Its line stays in {module}: {rules} (deployed) has the same rule. Roll that back too to take the"
            " line out.",
            module=module,
            rules=", ".join(kept_by),
        )
    if deployment.rollback_of is not None and deployment.version_before == deployment.version_after:
        return _("ℹ️ {module} was not changed: the line was no longer in it.", module=module)
    return None


def rule_history(rule: Rule, deployment: Deployment | None) -> list[str]:
    lines = []
    if rule.edited_by:
        lines.append("✏️ " + _("Edited by {who} {when}", who=who(rule.edited_by), when=when(rule.edited_at)))
    if rule.approved_by:
        lines.append("✅ " + _("Approved by {who} {when}", who=who(rule.approved_by), when=when(rule.approved_at)))
    if rule.rejected_by:
        reason = f": {escaped(rule.reject_reason, 200)}" if rule.reject_reason else ""
        lines.append(
            "⛔ " + _("Rejected by {who} {when}", who=who(rule.rejected_by), when=when(rule.rejected_at)) + reason
        )
    if rule.deployed_by:
        by, at = who(rule.deployed_by), when(rule.deployed_at)
        if rule.canary:
            lines.append(
                "🚀 "
                + _("Deployed to {percent} % of users by {who} {when}", percent=rule.rollout_percent, who=by, when=at)
            )
        else:
            lines.append("🚀 " + _("Deployed by {who} {when}", who=by, when=at))
    if rule.rolled_back_by:
        lines.append(
            "↩️ " + _("Rolled back by {who} {when}", who=who(rule.rolled_back_by), when=when(rule.rolled_back_at))
        )
    if deployment is not None:
        summary = deployment_summary(deployment)
        if summary:
            lines.append(summary)
        if deployment.change.get("hand_edited"):
            lines.append(
                "✋ "
                + _(
                    "The file had been edited by hand since Auto-Train last changed it: the edit was kept, and only"
                    " this rule's line was changed."
                )
            )
        promoted = deployment.change.get("promoted_canaries") or []
        if promoted:
            lines.append(
                "⏫ "
                + _(
                    "The line was already a canary of {rules}: that canary now reaches every user.",
                    rules=", ".join(map(str, promoted)),
                )
            )
        if deployment.reload_status == "failed":
            reason = escaped(deployment.reload_error or _("no answer"), 200)
            lines.append(
                "⚠️ "
                + ngettext(
                    "The chatbot has not reloaded this change: {reason} (retried automatically)",
                    "The chatbot has not reloaded this change: {reason} ({n} calls so far; retried automatically)",
                    deployment.reload_attempts,
                    reason=reason,
                )
            )
        if deployment.commit_error and not deployment.commit_sha:
            lines.append("⚠️ " + _("Not in git history yet: {error}", error=escaped(deployment.commit_error, 400)))
    return lines


def technical_details(rule: Rule, deployment: Deployment | None) -> str:
    """The card's small print: what a reviewer rarely needs and an operator sometimes does."""
    parts = [_("type {type}", type=rule.rule_type.value)]
    if deployment is not None:
        parts.append(
            _("version {before} → {after}", before=deployment.version_before[:8], after=deployment.version_after[:8])
        )
        reload = RELOAD_TEXT.get(deployment.reload_status or "")
        if reload and deployment.reload_status == "ok":
            parts.append(_(reload))
        if deployment.commit_sha:
            parts.append(_("commit {sha}", sha=f"`{deployment.commit_sha[:10]}`"))
    return " · ".join(parts)


def warning_lines(rule: Rule) -> list[str]:
    details = rule.warning_details
    lines = []
    for warning in rule.warnings:
        if warning in FLAG_NAME:
            continue  # a flag: named in the card's first line
        detail = details.get(warning.value)
        if detail and warning in WARNING_DETAIL_TEXT:
            lines.append("⚠️ " + _(WARNING_DETAIL_TEXT[warning], detail=escaped(detail, 300)))
        elif warning in WARNING_TEXT:
            lines.append("⚠️ " + _(WARNING_TEXT[warning]))
        else:
            lines.append(f"⚠️ {warning.value}")
    return lines


def _confidence_field(rule: Rule) -> Block:
    if rule.edited_by:  # the admin wrote the wording: the generator's confidence no longer describes it
        return mrkdwn("*" + _("Wording") + "*\n" + _("edited by {who}", who=who(rule.edited_by)))
    return mrkdwn("*" + _("Confidence") + f"*\n{percent(rule.confidence)}")


def rule_card(
    rule: Rule,
    feedback: Feedback | None,
    deployment: Deployment | None = None,
    cluster_examples: list[str] | None = None,
    *,
    canary_percent: int,
    evaluation: Evaluation | None = None,
    evaluation_required: bool = False,
) -> tuple[str, list[Block]]:
    """The review card of one rule: (fallback text, blocks). `canary_percent` is `Settings.canary_percent`."""
    status = rule.status
    title = f"{STATUS_EMOJI[status]} {rule.rule_id} · {_(status.value)}"
    if rule.canary:
        title += " · " + _("canary {percent} %", percent=rule.rollout_percent)
    blocks: list[Block] = [header(title)]
    if rule.flagged:  # before anything else, so that nobody approves it on its looks
        blocks.append(
            section(
                "🚩 *"
                + _("Flagged: {flags}.", flags=flag_names(rule))
                + "* "
                + _(
                    "Read the rule and the feedback closely; approving asks you to confirm, and it is never approved"
                    " automatically."
                )
            )
        )
    from_whom = (
        " · " + _("{type} from {who}", type=_(feedback.feedback_type.value), who=who(feedback.user_id))
        if feedback
        else ""
    )
    blocks.append(
        {
            "type": "section",
            "fields": [
                mrkdwn("*" + _("Rule file") + f"*\n`{escape(rule.module_name)}`"),
                _confidence_field(rule),
                mrkdwn("*" + _("Feedback") + f"*\n{rule.feedback_id}{from_whom}"),
            ],
        }
    )
    if cluster_examples:
        examples = "\n".join(f"• {quote(text, 200)[1:]}" for text in cluster_examples[:3])
        blocks.append(
            section(
                "*"
                + _("Same complaint from {n} feedbacks", n=number(rule.cluster_size))
                + "*"
                + _(", the newest:")
                + f"\n{examples}"
            )
        )
    if rule.recurrences:
        came_back = ngettext(
            "The complaint came back once since it was deployed",
            "The complaint came back {n} times since it was deployed",
            rule.recurrences,
        )
        blocks.append(
            section(
                f"🔁 *{came_back}*: "
                + _(
                    "this rule may not be preventing it (its effect: {path}).",
                    path=f"`GET /autotrain/rules/{rule.rule_id}`",
                )
            )
        )
    if feedback is not None:
        # one section each, so a long answer can never push the feedback itself off the card
        blocks.append(section("*" + _("Customer asked") + f"*\n{quote(feedback.query, 500)}"))
        blocks.append(section("*" + _("Bot answered") + f"*\n{quote(feedback.ai_response, 700)}"))
        blocks.append(section("*" + _("Feedback") + f"*\n{quote(feedback.feedback_text, 900)}"))
    blocks.append(section(rule_diff(rule)))
    blocks.append(section("*" + _("Why") + f"*\n{escaped(rule.reasoning, 1500) or _('_(no reasoning given)_')}"))
    warnings = warning_lines(rule)
    if warnings:
        blocks.append(context(*warnings))
    history = rule_history(rule, deployment)
    if history:
        blocks.append(context(*history))
    if evaluation is not None:
        blocks.append(evaluation_section(evaluation))
    gate_closed = evaluation_required and (evaluation is None or evaluation.status is not EvaluationStatus.PASSED)
    buttons = rule_buttons(rule, canary_percent=canary_percent, evaluation_required=gate_closed)
    if buttons:
        blocks.append({"type": "actions", "block_id": "rule_actions", "elements": buttons})
    blocks.append(context(technical_details(rule, deployment)))
    text = f"{rule.rule_id} ({_(status.value)}) · {escape(rule.module_name)}: {escaped(rule.new_rule, 200)}"
    if rule.flagged:
        text = "🚩 " + text
    return text, blocks


# ---------------------------------------------------------------------- modals


def _text_input(
    block_id: str, label: str, *, initial: str = "", multiline: bool = False, optional: bool = False, max_length: int
) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": block_id,
        "multiline": multiline,
        "max_length": min(max_length, INPUT_LIMIT),
    }
    if initial:
        element["initial_value"] = clip(initial, element["max_length"])
    return {
        "type": "input",
        "block_id": block_id,
        "label": plain(label, 2000),
        "optional": optional,
        "element": element,
    }


def _option(value: str, label: str) -> Block:
    return {"text": plain(label), "value": value}


FEEDBACK_TYPE_LABELS = {
    FeedbackType.BUG: N_("🐞 Bug: the bot got it wrong"),
    FeedbackType.SUGGESTION: N_("💡 Suggestion: it could do better"),
    FeedbackType.PRAISE: N_("👏 Praise: keep doing this"),
}


def feedback_modal(
    *,
    query: str = "",
    ai_response: str = "",
    feedback_text: str = "",
    metadata: dict[str, str] | None = None,
) -> Block:
    options = [_option(t.value, _(label)) for t, label in FEEDBACK_TYPE_LABELS.items()]
    return {
        "type": "modal",
        "callback_id": FEEDBACK_CALLBACK,
        "title": plain(_("Report to Auto-Train"), 24),
        "submit": plain(_("Submit"), 24),
        "close": plain(_("Cancel"), 24),
        "private_metadata": json.dumps(metadata or {})[:3000],
        "blocks": [
            _text_input("query", _("What the customer asked"), initial=query, max_length=2000),
            _text_input(
                "ai_response",
                _("What the bot answered"),
                initial=ai_response,
                multiline=True,
                optional=True,
                max_length=3000,
            ),
            _text_input(
                "feedback_text",
                _("What was wrong (or right)"),
                initial=feedback_text,
                multiline=True,
                max_length=3000,
            ),
            {
                "type": "input",
                "block_id": "feedback_type",
                "label": plain(_("Type")),
                "element": {
                    "type": "static_select",
                    "action_id": "feedback_type",
                    "options": options,
                    "initial_option": options[0],
                },
            },
        ],
    }


def edit_modal(rule: Rule, allowed_modules: tuple[str, ...]) -> Block:
    options = [_option(name, name) for name in allowed_modules]
    initial = next((o for o in options if o["value"] == rule.module_name), options[0])
    about = _("From {feedback_id} · the edit is audited", feedback_id=rule.feedback_id)
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "title": plain(_("Edit {rule_id}", rule_id=rule.rule_id), 24),
        "submit": plain(_("Save"), 24),
        "close": plain(_("Cancel"), 24),
        "private_metadata": rule.rule_id,
        "blocks": [
            context(about),
            _text_input("new_rule", _("New rule (one line)"), initial=rule.new_rule, max_length=500),
            {
                "type": "input",
                "block_id": "module_name",
                "label": plain(_("Rule file")),
                "element": {
                    "type": "static_select",
                    "action_id": "module_name",
                    "options": options,
                    "initial_option": initial,
                },
            },
            _text_input(
                "old_rule",
                _("Rule it replaces (leave empty to append)"),
                initial=rule.old_rule or "",
                optional=True,
                max_length=500,
            ),
            context(
                _(
                    "The rule it replaces must be a line of the file; case and accents need not match, the file's own"
                    " line is used."
                )
            ),
        ],
    }


# ---------------------------------------------------------------------- replies


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{_(name)} *{number(n)}*" for name, n in counts.items())


def status_blocks(report: StatusReport) -> list[Block]:
    blocks = [
        header(_("Auto-Train status")),
        section(
            "*" + _("Feedback") + f"* {_counts(report.feedback_by_status)}\n"
            f"*" + _("By type") + f"* {_counts(report.feedback_by_type)}\n"
            f"*" + _("Rules") + f"* {_counts(report.rules_by_status)}"
        ),
        section(
            "*"
            + _("Deployments")
            + "* "
            + _(
                "{total} in all, {today} today, {rollbacks} · generator: {generator}",
                total=number(report.deployments_total),
                today=number(report.deployed_today),
                rollbacks=ngettext("{n} rollback", "{n} rollbacks", report.rollbacks_total),
                generator=report.generator,
            )
        ),
        section(generation_line(report)),
    ]
    if report.evaluation.get("runs"):
        e = report.evaluation
        blocks.append(
            section(
                "*"
                + _("Replays")
                + "* "
                + _(
                    "{runs} (passed {passed}, failed {failed}, skipped {skipped}, error {error}) · tokens {tokens} ·"
                    " {seconds} s",
                    runs=number(e["runs"]),
                    passed=number(e.get("passed", 0)),
                    failed=number(e.get("failed", 0)),
                    skipped=number(e.get("skipped", 0)),
                    error=number(e.get("error", 0)),
                    tokens=number(e.get("tokens", 0)),
                    seconds=number(round(e.get("latency_ms", 0) / 1000, 1)),
                )
            )
        )
    if report.uncommitted_deployments:
        error = f"\n> {escaped(report.last_commit_error, 600)}" if report.last_commit_error else ""
        blocks.append(
            section(
                "⚠️ *"
                + _("Git history")
                + "* "
                + ngettext(
                    "{n} deployed change is not committed yet: the file is changed, its commit failed.",
                    "{n} deployed changes are not committed yet: the files are changed, their commit failed.",
                    report.uncommitted_deployments,
                )
                + error
            )
        )
    elif not report.git_history:
        blocks.append(context(_("Git history is off: rule-file changes are not committed.")))
    if report.hand_edited_rule_files:
        edits = report.hand_edited_rule_files[-3:]  # the newest, last
        lines = "\n".join(
            "• "
            + _(
                "{module} on {instance} {when}: the edited copy is kept at {path}",
                module=f"`{escape(found.module_name)}`",
                instance=f"`{escape(found.instance or '?')}`",
                when=when(found.found_at),
                path=f"`{escape(found.kept_at)}`",
            )
            for found in reversed(edits)
        )
        blocks.append(
            section(
                "✍️ *"
                + _("Edited by hand")
                + "* "
                + ngettext(
                    "{n} rule file was changed by hand in an instance's folder; the database won (the file was"
                    " written again from its newest version). To keep a change, deploy it as a rule.",
                    "{n} rule files were changed by hand in an instance's folder; the database won (each was"
                    " written again from its newest version). To keep a change, deploy it as a rule.",
                    len(report.hand_edited_rule_files),
                )
                + f"\n{lines}"
            )
        )
    if report.metrics is not None:
        blocks.append(section(metrics_line(report.metrics)))
    if report.last_deployments:
        lines = "\n".join(_deployment_line(d) for d in report.last_deployments)
        blocks.append(section("*" + _("Last deployments") + f"*\n{lines}"))
    return blocks


def generation_line(report: StatusReport) -> str:
    totals = report.generation
    latency = (
        _(", {ms} ms on average", ms=number(totals.average_latency_ms)) if totals.average_latency_ms is not None else ""
    )
    return (
        "*"
        + _("Generations")
        + "* "
        + _(
            "{attempts} ({succeeded} rules, {declined} declined, {failed} failed: error rate {rate}){latency} · tokens"
            " {tokens_in} in / {tokens_out} out",
            attempts=number(totals.attempts),
            succeeded=number(totals.succeeded),
            declined=number(totals.declined),
            failed=number(totals.failed),
            rate=f"{totals.error_rate:.1%}",
            latency=latency,
            tokens_in=number(totals.input_tokens),
            tokens_out=number(totals.output_tokens),
        )
    )


def metrics_line(metrics: Metrics) -> str:
    oldest = (
        " · "
        + _(
            "oldest pending {feedback_id} since {when}",
            feedback_id=metrics.oldest_pending_feedback_id,
            when=when(metrics.oldest_pending_at),
        )
        if metrics.oldest_pending_feedback_id
        else ""
    )
    return (
        "*"
        + _("Last {minutes} min", minutes=metrics.error_rate_window_minutes)
        + "* "
        + _(
            "error rate {rate} of {n} generations",
            rate=f"{metrics.generation_error_rate:.1%}",
            n=number(metrics.generation_attempts_in_window),
        )
        + " · *"
        + _("approval time")
        + "* "
        + _(
            "({days} d) average {average}, p90 {p90}",
            days=metrics.approval_window_days,
            average=duration(metrics.approval_seconds_avg),
            p90=duration(metrics.approval_seconds_p90),
        )
        + oldest
    )


def _deployment_line(deployment: Deployment) -> str:
    target = f"`{escape(deployment.module_name)}`"
    values = {"rule_id": deployment.rule_id, "module": target, "who": who(deployment.deployed_by)}
    if deployment.rollback_of:
        line = _("{rule_id} rolled back in {module} by {who}", **values)
    elif deployment.outcome is DeployOutcome.NOOP:
        line = _("{rule_id} deployed to {module} by {who} (already there: no change)", **values)
    else:
        line = _("{rule_id} deployed to {module} by {who}", **values)
    return f"• {line} {when(deployment.deployed_at)}"


RULES_PAGE = 20
RULES_NEXT_PAGE_ACTION_ID = "rules_next_page"


def rules_text(total: int, status: RuleStatus | None) -> str:
    label = _(status.value) if status else _("all")
    return _("Rules: {status} ({total})", status=label, total=number(total))


def rules_blocks(
    rules: list[Rule], total: int, status: RuleStatus | None, *, shown_before: int = 0, next_cursor: str | None = None
) -> list[Block]:
    """One page of `/autotrain rules`; `next_cursor` (the list's) puts a button for the next page under it."""
    blocks = [header(rules_text(total, status))]
    if not rules:
        blocks.append(section(_("_Nothing here._")))
    for rule in rules[: MESSAGE_BLOCK_LIMIT - 3]:
        blocks.append(
            section(
                f"{STATUS_EMOJI[rule.status]} *{rule.rule_id}* · `{escape(rule.module_name)}` · "
                f"{percent(rule.confidence)}\n{escaped(rule.new_rule, 300)}"
            )
        )
    if rules and (shown_before or total > len(rules)):
        first, last = shown_before + 1, shown_before + len(rules)
        blocks.append(context(_("{first}–{last} of {total}", first=first, last=last, total=number(total))))
    if next_cursor:
        value = json.dumps({"status": status.value if status else "all", "cursor": next_cursor, "shown": last})
        blocks.append(
            {
                "type": "actions",
                "block_id": "rules_paging",
                "elements": [button(RULES_NEXT_PAGE_ACTION_ID, _("Next {n}", n=min(RULES_PAGE, total - last)), value)],
            }
        )
    return blocks


def run_all_started_text(user_id: str, total: int) -> str:
    return "⏳ " + ngettext(
        "Run-all started by {who}: {n} pending feedback",
        "Run-all started by {who}: {n} pending feedback",
        total,
        who=f"<@{user_id}>",
    )


def run_all_progress_text(done: int, total: int, errors: int) -> str:
    text = "⏳ " + _("Run-all: {done} / {total} feedback processed", done=number(done), total=number(total))
    if errors:
        text += ", " + ngettext("{n} error", "{n} errors", errors)
    return text


def run_all_summary_blocks(summary: RunAllSummary) -> tuple[str, list[Block]]:
    if summary.total == 0:
        text = "✅ " + _("Run-all: no pending feedback.")
        return text, [section(text)]
    text = "✅ " + _(
        "Run-all finished: {feedback}, {rules} created, {skipped} skipped, {errors}",
        feedback=ngettext("{n} feedback", "{n} feedbacks", summary.total),
        rules=ngettext("{n} rule", "{n} rules", len(summary.rules_created)),
        skipped=number(len(summary.skipped)),
        errors=ngettext("{n} error", "{n} errors", len(summary.errors)),
    )
    blocks = [section(text)]
    clusters = [c for c in summary.clusters if len(c.feedback_ids) > 1]
    if clusters:
        lines = [
            "• "
            + _(
                "{rule_id}: one rule for {n} feedbacks ({feedback_ids})",
                rule_id=c.rule_id,
                n=number(len(c.feedback_ids)),
                feedback_ids=", ".join(c.feedback_ids[:8]) + ("…" if len(c.feedback_ids) > 8 else ""),
            )
            for c in clusters[:15]
        ]
        more = "\n" + _("…and {n} more", n=number(len(clusters) - 15)) if len(clusters) > 15 else ""
        blocks.append(section("*" + _("Same complaint, one rule") + "*\n" + "\n".join(lines) + more))
    clustered = {c.rule_id for c in clusters}
    single = [rule_id for rule_id in summary.rules_created if rule_id not in clustered]
    if single:
        blocks.append(context(_("Rules: {rule_ids}", rule_ids=", ".join(single[:60]))))
    if summary.errors:
        lines = [f"• {e['feedback_id']}: {escaped(e['error'], 200)}" for e in summary.errors[:10]]
        title = _("Errors (the feedback stays pending and can be retried)")
        blocks.append(section(f"*{title}*\n" + "\n".join(lines)))
    return text, blocks


# ---------------------------------------------------------------------- App Home


def home_view(
    report: StatusReport, pending: list[Rule], pending_total: int, settings: Settings, came_back: Sequence[Rule] = ()
) -> Block:
    blocks: list[Block] = [
        header("Auto-Train"),
        context(_("Feedback about the chatbot → reviewed rule changes. `/autotrain help` lists the commands.")),
        *status_blocks(report)[1:],
        {"type": "divider"},
        header(_("Waiting for review ({n})", n=number(pending_total))),
    ]
    if not pending:
        blocks.append(section(_("_No rules waiting. 🎉_")))
    for rule in pending[:10]:
        flag = "🚩 " if rule.flagged else ""
        blocks.append(
            section(
                f"🟡 {flag}*{rule.rule_id}* · `{escape(rule.module_name)}` · {percent(rule.confidence)}\n"
                f"{escaped(rule.new_rule, 300)}"
            )
        )
    if pending_total > len(pending[:10]):
        blocks.append(
            context(
                _(
                    "and {n} more: {command}",
                    n=number(pending_total - len(pending[:10])),
                    command="`/autotrain rules pending`",
                )
            )
        )
    if came_back:
        blocks += [{"type": "divider"}, header(_("Deployed, and the complaint came back"))]
        for rule in came_back[:10]:
            times = ngettext("once", "{n} times", rule.recurrences)
            blocks.append(
                section(f"🔁 *{rule.rule_id}* · `{escape(rule.module_name)}` · {times}\n{escaped(rule.new_rule, 300)}")
            )
    blocks += [
        {"type": "divider"},
        section(
            "*"
            + _("Alert thresholds")
            + "*\n"
            + "\n".join(
                [
                    "• " + _("pending feedback > {n}", n=number(settings.alert_pending_max)),
                    "• " + _("generation error rate > {rate}", rate=percent(settings.alert_error_rate_max)),
                    "• " + _("deploys per day > {n}", n=number(settings.alert_deploys_per_day_max)),
                    "• " + _("average approval time > {hours} h", hours=f"{settings.alert_approval_hours_max:g}"),
                ]
            )
        ),
    ]
    return {"type": "home", "blocks": blocks[:100]}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return _("n/a")
    if seconds < 3600:
        return _("{n} min", n=number(round(seconds / 60)))
    return _("{n} h", n=number(round(seconds / 3600, 1)))
