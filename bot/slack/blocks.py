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
from autotrain.models import (
    Deployment,
    Feedback,
    FeedbackType,
    Rule,
    RuleStatus,
    RuleWarning,
    RunAllSummary,
    StatusReport,
)
from autotrain.monitoring import Metrics
from autotrain.policy import RuleAction, rule_actions
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

WARNING_TEXT = {
    RuleWarning.OLD_RULE_NOT_FOUND: "The rule it replaces is not in the file: deploying will append it instead.",
    RuleWarning.POSSIBLE_INJECTION: "Looks like instructions injected through the feedback: read it carefully.",
    RuleWarning.DUPLICATE: "This rule is already in a rule file.",
    RuleWarning.NEAR_DUPLICATE: "Almost the same as a rule already in a file.",
    RuleWarning.LOW_CONFIDENCE: "Low confidence: edit the wording before approving.",
    RuleWarning.FLAGGED_CONTENT: "The feedback was flagged by the content filter.",
    RuleWarning.CONTAINS_URL: "The rule contains a link.",
    RuleWarning.CONTAINS_CODE: "The rule contains something that looks like code or markup.",
    RuleWarning.CONTAINS_SECRET: "The rule contains something that looks like a password or key.",
    RuleWarning.COPIED_FEEDBACK: "The rule copies the customer's feedback word for word.",
    RuleWarning.EXISTING_RULE_NOT_FOLLOWED: "The complaint is about a rule already in the file that the bot did not"
    " follow: a prompt change may not be the fix.",
    RuleWarning.RECURRENCE_OF_DEPLOYED_RULE: "The same complaint came back after a rule for it was deployed.",
    RuleWarning.CONFLICTS_WITH_RULE: "It contradicts a rule already deployed in this file (see the replay line).",
}

HELP_TEXT = (
    "*Auto-Train* turns feedback about the chatbot into reviewed rule changes.\n"
    "• `/autotrain feedback [text]` — report a problem (opens a form)\n"
    "• `/autotrain status` — counts, backlog, last deployments\n"
    "• `/autotrain rules [pending|approved|deployed|rejected|rolled_back]` — list rules (default: pending)\n"
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
        return "someone"
    if actor_id == "system":
        return "Auto-Train"
    if actor_id == "auto-approve":
        return "Auto-Train (auto-approve: confident, no warnings)"
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
    dialog["deny"] = plain("Cancel", 30)
    if style:
        dialog["style"] = style
    return dialog


def button(action_id: str, label: str, rule_id: str, style: str | None = None, confirm: Block | None = None) -> Block:
    button: Block = {"type": "button", "action_id": action_id, "text": plain(label), "value": rule_id}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


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


def _rulebutton(action: RuleAction, rule: Rule, *, canary_percent: int) -> Block:
    """The card's button for one action; what changes a file or closes the rule asks to confirm first."""
    rule_id = rule.rule_id
    action_id = RULE_ACTION_IDS[action]
    match action:
        case RuleAction.APPROVE:
            return button(action_id, "Approve", rule_id, "primary")
        case RuleAction.EDIT:
            return button(action_id, "Edit", rule_id)
        case RuleAction.DEPLOY:
            text = f"{rule.module_name} will be changed now, for every user, and the chatbot told to reload."
            confirm = confirm_dialog(f"Deploy {rule_id}?", text, "Deploy", "primary")
            return button(action_id, "All users", rule_id, "primary", confirm)
        case RuleAction.CANARY:
            text = f"{canary_percent} % of users get the new rule first; the others keep the current rules."
            confirm = confirm_dialog(f"Canary {rule_id}?", text, "Start canary", "primary")
            return button(action_id, f"Canary {canary_percent} %", rule_id, None, confirm)
        case RuleAction.PROMOTE:
            text = "Every user gets the new rule; the rule it replaces goes."
            confirm = confirm_dialog(f"Promote {rule_id}?", text, "Promote", "primary")
            return button(action_id, "Promote to 100 %", rule_id, "primary", confirm)
        case RuleAction.ROLLBACK:
            text = f"The change to {rule.module_name} will be reverted."
            confirm = confirm_dialog(f"Roll back {rule_id}?", text, "Roll back", "danger")
            return button(action_id, "Roll back", rule_id, "danger", confirm)
        case RuleAction.DEPLOY_OVERRIDE:
            text = (
                f"Its replay has not passed. {rule.module_name} will be changed for every user anyway, and the audit"
                " log records that you overrode the check."
            )
            confirm = confirm_dialog(f"Deploy {rule_id} without a passed replay?", text, "Deploy anyway", "danger")
            return button(action_id, "Deploy anyway", rule_id, "danger", confirm)
        case RuleAction.REJECT:
            text = "The rule will not be deployed and its feedback is closed."
            confirm = confirm_dialog(f"Reject {rule_id}?", text, "Reject", "danger")
            return button(action_id, "Reject", rule_id, "danger", confirm)
    assert_never(action)


def rule_buttons(rule: Rule, *, canary_percent: int, evaluation_required: bool = False) -> list[Block]:
    """One button for each action the policy allows the rule (`rule_actions`), in its order."""
    actions = rule_actions(rule, evaluation_required=evaluation_required)
    return [_rulebutton(action, rule, canary_percent=canary_percent) for action in actions]


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
        text += "\n⚠️ Contradicts a deployed rule: " + "; ".join(
            f"`{escaped(c, 150)}`" for c in evaluation.conflicts[:2]
        )
    if evaluation.revised_from:
        text += f"\n✏️ Revised from: `{escaped(evaluation.revised_from, 200)}`"
    block = section(text)
    if evaluation.detail:
        block["accessory"] = {
            "type": "button",
            "action_id": "rule_show_replays",
            "text": plain("Show replays"),
            "value": evaluation.rule_id,
        }
    return block


def replays_modal(evaluation: Evaluation) -> Block:
    """Each replayed case: the question, the answer before and after, and the judge's verdict."""
    kinds = {"complaint": "Complaint", "regression": "Earlier fix", "praise": "Praised answer"}
    blocks: list[Block] = [section(f"*{evaluation.rule_id}* · {escaped(evaluation.summary, 300)}")]
    for case in evaluation.detail[:20]:
        mark = "✅" if case.holds else ("❌" if case.holds is False else "…")
        blocks += [
            {"type": "divider"},
            section(f"{mark} *{kinds[case.kind.value]}* {case.feedback_id}: {quote(case.query, 300)}"),
            {
                "type": "section",
                "fields": [
                    mrkdwn("*Before*\n" + (escaped(case.answer_before or "", 900) or "_(none)_")),
                    mrkdwn("*After*\n" + (escaped(case.answer_after or "", 900) or "_(none)_")),
                ],
            },
            context(escaped(case.reason or "", 600) or "_(no reason given)_"),
        ]
    return {
        "type": "modal",
        "title": plain("Replays", 24),
        "close": plain("Close", 24),
        "blocks": blocks[:100],
    }


def rule_diff(rule: Rule) -> str:
    new = escaped(_rule_text(rule.new_rule), 700)
    if rule.old_rule:
        old = escaped(_rule_text(rule.old_rule), 700)
        return f"*Change* (replace)\n```− {old}\n+ {new}```"
    return f"*Change* (append)\n```+ {new}```"


def rule_history(rule: Rule, deployment: Deployment | None) -> list[str]:
    lines = []
    if rule.edited_by:
        lines.append(f"✏️ Edited by {who(rule.edited_by)} {when(rule.edited_at)}")
    if rule.approved_by:
        lines.append(f"✅ Approved by {who(rule.approved_by)} {when(rule.approved_at)}")
    if rule.rejected_by:
        reason = f": {escaped(rule.reject_reason, 200)}" if rule.reject_reason else ""
        lines.append(f"⛔ Rejected by {who(rule.rejected_by)} {when(rule.rejected_at)}{reason}")
    if rule.deployed_by:
        share = f" to {rule.rollout_percent} % of users" if rule.canary else ""
        lines.append(f"🚀 Deployed{share} by {who(rule.deployed_by)} {when(rule.deployed_at)}")
    if rule.rolled_back_by:
        lines.append(f"↩️ Rolled back by {who(rule.rolled_back_by)} {when(rule.rolled_back_at)}")
    if deployment is not None:
        reload = {"ok": "chatbot reloaded", "failed": "⚠️ chatbot reload failed", "skipped": "no reload"}.get(
            deployment.reload_status or "", ""
        )
        commit = f", commit `{deployment.commit_sha[:10]}`" if deployment.commit_sha else ""
        lines.append(
            f"`{escape(deployment.module_name)}` {deployment.version_before} → {deployment.version_after}"
            f" ({deployment.outcome.value}{', ' + reload if reload else ''}{commit})"
        )
        if deployment.change.get("hand_edited"):
            lines.append(
                "✋ The file had been edited by hand since Auto-Train last changed it: the edit was kept, and only"
                " this rule's line was changed."
            )
        promoted = deployment.change.get("promoted_canaries") or []
        if promoted:
            lines.append(
                f"⏫ The line was already a canary of {', '.join(map(str, promoted))}: that canary now reaches every"
                " user."
            )
        if deployment.reload_status == "failed":
            calls = f"{deployment.reload_attempts} calls so far; " if deployment.reload_attempts > 1 else ""
            lines.append(
                f"⚠️ The chatbot has not reloaded this change: {escaped(deployment.reload_error or 'no answer', 200)}"
                f" ({calls}retried automatically)"
            )
        if deployment.commit_error and not deployment.commit_sha:
            lines.append(f"⚠️ Not in git history yet: {escaped(deployment.commit_error, 400)}")
    return lines


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
    title = f"{STATUS_EMOJI[status]} {rule.rule_id} · {status.value.replace('_', ' ')}"
    if rule.canary:
        title += f" · canary {rule.rollout_percent} %"
    blocks: list[Block] = [
        header(title),
        {
            "type": "section",
            "fields": [
                mrkdwn(f"*Rule file*\n`{escape(rule.module_name)}`"),
                mrkdwn(f"*Confidence*\n{percent(rule.confidence)}"),
                mrkdwn(f"*Type*\n{rule.rule_type.value}"),
                mrkdwn(
                    f"*Feedback*\n{rule.feedback_id}"
                    + (f" · {feedback.feedback_type.value} from {who(feedback.user_id)}" if feedback else "")
                ),
            ],
        },
    ]
    if cluster_examples:
        examples = "\n".join(f"• {quote(text, 200)[1:]}" for text in cluster_examples[:3])
        blocks.append(section(f"*Same complaint from {rule.cluster_size} feedbacks*, the newest:\n{examples}"))
    if rule.recurrences:
        times = "once" if rule.recurrences == 1 else f"{rule.recurrences} times"
        blocks.append(
            section(
                f"🔁 *The complaint came back {times} since it was deployed*: this rule may not be preventing it"
                f" (its effect: `GET /autotrain/rules/{rule.rule_id}`)."
            )
        )
    if feedback is not None:
        # one section each, so a long answer can never push the feedback itself off the card
        blocks.append(section(f"*Customer asked*\n{quote(feedback.query, 500)}"))
        blocks.append(section(f"*Bot answered*\n{quote(feedback.ai_response, 700)}"))
        blocks.append(section(f"*Feedback*\n{quote(feedback.feedback_text, 900)}"))
    blocks.append(section(rule_diff(rule)))
    blocks.append(section(f"*Why*\n{escaped(rule.reasoning, 1500) or '_(no reasoning given)_'}"))
    warnings = [f"⚠️ {WARNING_TEXT.get(w, w.value)}" for w in rule.warnings]
    if rule.flagged:
        warnings.insert(0, "🚩 *Flagged:* review it closely; it will never be approved automatically.")
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
    text = f"{rule.rule_id} ({status.value}) for {escape(rule.module_name)}: {escaped(rule.new_rule, 200)}"
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
    FeedbackType.BUG: "🐞 Bug: the bot got it wrong",
    FeedbackType.SUGGESTION: "💡 Suggestion: it could do better",
    FeedbackType.PRAISE: "👏 Praise: keep doing this",
}


def feedback_modal(
    *,
    query: str = "",
    ai_response: str = "",
    feedback_text: str = "",
    metadata: dict[str, str] | None = None,
) -> Block:
    options = [_option(t.value, label) for t, label in FEEDBACK_TYPE_LABELS.items()]
    return {
        "type": "modal",
        "callback_id": FEEDBACK_CALLBACK,
        "title": plain("Report to Auto-Train", 24),
        "submit": plain("Submit", 24),
        "close": plain("Cancel", 24),
        "private_metadata": json.dumps(metadata or {})[:3000],
        "blocks": [
            _text_input("query", "What the customer asked", initial=query, max_length=2000),
            _text_input(
                "ai_response",
                "What the bot answered",
                initial=ai_response,
                multiline=True,
                optional=True,
                max_length=3000,
            ),
            _text_input(
                "feedback_text", "What was wrong (or right)", initial=feedback_text, multiline=True, max_length=3000
            ),
            {
                "type": "input",
                "block_id": "feedback_type",
                "label": plain("Type"),
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
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "title": plain(f"Edit {rule.rule_id}", 24),
        "submit": plain("Save", 24),
        "close": plain("Cancel", 24),
        "private_metadata": rule.rule_id,
        "blocks": [
            context(f"From {rule.feedback_id} · confidence {percent(rule.confidence)} · the edit is audited"),
            _text_input("new_rule", "New rule (one line)", initial=rule.new_rule, max_length=500),
            {
                "type": "input",
                "block_id": "module_name",
                "label": plain("Rule file"),
                "element": {
                    "type": "static_select",
                    "action_id": "module_name",
                    "options": options,
                    "initial_option": initial,
                },
            },
            _text_input(
                "old_rule",
                "Rule it replaces (leave empty to append)",
                initial=rule.old_rule or "",
                optional=True,
                max_length=500,
            ),
        ],
    }


# ---------------------------------------------------------------------- replies


def status_blocks(report: StatusReport) -> list[Block]:
    feedback = " · ".join(f"{k} *{v}*" for k, v in report.feedback_by_status.items())
    rules = " · ".join(f"{k.replace('_', ' ')} *{v}*" for k, v in report.rules_by_status.items())
    types = " · ".join(f"{k} *{v}*" for k, v in report.feedback_by_type.items())
    blocks = [
        header("Auto-Train status"),
        section(f"*Feedback* {feedback}\n*By type* {types}\n*Rules* {rules}"),
        section(
            f"*Deployments* {report.deployments_total} in all, {report.deployed_today} today, "
            f"{report.rollbacks_total} rollbacks · generator: {report.generator}"
        ),
        section(generation_line(report)),
    ]
    if report.evaluation.get("runs"):
        e = report.evaluation
        blocks.append(
            section(
                f"*Replays* {e['runs']} (passed {e.get('passed', 0)}, failed {e.get('failed', 0)}, skipped "
                f"{e.get('skipped', 0)}, error {e.get('error', 0)}) · tokens {e.get('tokens', 0):,} · "
                f"{e.get('latency_ms', 0) / 1000:.1f} s"
            )
        )
    if report.uncommitted_deployments:
        error = f"\n> {escaped(report.last_commit_error, 600)}" if report.last_commit_error else ""
        blocks.append(
            section(
                f"⚠️ *Git history* {report.uncommitted_deployments} deployed change(s) not committed yet: the files"
                f" are changed, their commit failed.{error}"
            )
        )
    elif not report.git_history:
        blocks.append(context("Git history is off: rule-file changes are not committed."))
    if report.metrics is not None:
        blocks.append(section(metrics_line(report.metrics)))
    if report.last_deployments:
        blocks.append(section("*Last deployments*\n" + "\n".join(_deployment_line(d) for d in report.last_deployments)))
    return blocks


def generation_line(report: StatusReport) -> str:
    totals = report.generation
    latency = f", {totals.average_latency_ms} ms on average" if totals.average_latency_ms is not None else ""
    return (
        f"*Generations* {totals.attempts} ({totals.succeeded} rules, {totals.declined} declined, "
        f"{totals.failed} failed: error rate {totals.error_rate:.1%}){latency} · "
        f"tokens {totals.input_tokens:,} in / {totals.output_tokens:,} out"
    )


def metrics_line(metrics: Metrics) -> str:
    oldest = (
        f" · oldest pending {metrics.oldest_pending_feedback_id} since {when(metrics.oldest_pending_at)}"
        if metrics.oldest_pending_feedback_id
        else ""
    )
    return (
        f"*Last {metrics.error_rate_window_minutes} min* error rate {metrics.generation_error_rate:.1%} of "
        f"{metrics.generation_attempts_in_window} generations · *approval time* ({metrics.approval_window_days} d) "
        f"average {duration(metrics.approval_seconds_avg)}, p90 {duration(metrics.approval_seconds_p90)}{oldest}"
    )


def _deployment_line(deployment: Deployment) -> str:
    verb = "rolled back" if deployment.rollback_of else "deployed"
    target = f"`{escape(deployment.module_name)}`"
    return f"• {deployment.rule_id} {verb} to {target} by {who(deployment.deployed_by)} {when(deployment.deployed_at)}"


def rules_blocks(rules: list[Rule], total: int, status: RuleStatus | None) -> list[Block]:
    label = status.value.replace("_", " ") if status else "all"
    blocks = [header(f"Rules: {label} ({total})")]
    if not rules:
        blocks.append(section("_Nothing here._"))
    for rule in rules[: MESSAGE_BLOCK_LIMIT - 2]:
        blocks.append(
            section(
                f"{STATUS_EMOJI[rule.status]} *{rule.rule_id}* · `{escape(rule.module_name)}` · "
                f"{percent(rule.confidence)}\n{escaped(rule.new_rule, 300)}"
            )
        )
    if total > len(rules):
        blocks.append(context(f"Showing {len(rules)} of {total}."))
    return blocks


def run_all_progress_text(done: int, total: int, errors: int) -> str:
    return f"⏳ Run-all: {done} / {total} feedback processed" + (f", {errors} errors" if errors else "")


def run_all_summary_blocks(summary: RunAllSummary) -> tuple[str, list[Block]]:
    if summary.total == 0:
        text = "✅ Run-all: no pending feedback."
        return text, [section(text)]
    text = (
        f"✅ Run-all finished: {summary.total} feedback, {len(summary.rules_created)} rules created, "
        f"{len(summary.skipped)} skipped, {len(summary.errors)} errors"
    )
    blocks = [section(text)]
    if summary.rules_created:
        blocks.append(context("Rules: " + ", ".join(summary.rules_created[:60])))
    if summary.errors:
        lines = [f"• {e['feedback_id']}: {escaped(e['error'], 200)}" for e in summary.errors[:10]]
        blocks.append(section("*Errors* (the feedback stays pending and can be retried)\n" + "\n".join(lines)))
    return text, blocks


# ---------------------------------------------------------------------- App Home


def home_view(
    report: StatusReport, pending: list[Rule], pending_total: int, settings: Settings, came_back: Sequence[Rule] = ()
) -> Block:
    blocks: list[Block] = [
        header("Auto-Train"),
        context("Feedback about the chatbot → reviewed rule changes. `/autotrain help` lists the commands."),
        *status_blocks(report)[1:],
        {"type": "divider"},
        header(f"Waiting for review ({pending_total})"),
    ]
    if not pending:
        blocks.append(section("_No rules waiting. 🎉_"))
    for rule in pending[:10]:
        blocks.append(
            section(
                f"🟡 *{rule.rule_id}* · `{escape(rule.module_name)}` · {percent(rule.confidence)}\n"
                f"{escaped(rule.new_rule, 300)}"
            )
        )
    if pending_total > len(pending[:10]):
        blocks.append(context(f"and {pending_total - len(pending[:10])} more: `/autotrain rules pending`"))
    if came_back:
        blocks += [{"type": "divider"}, header("Deployed, and the complaint came back")]
        for rule in came_back[:10]:
            times = "once" if rule.recurrences == 1 else f"{rule.recurrences} times"
            blocks.append(
                section(f"🔁 *{rule.rule_id}* · `{escape(rule.module_name)}` · {times}\n{escaped(rule.new_rule, 300)}")
            )
    blocks += [
        {"type": "divider"},
        section(
            "*Alert thresholds*\n"
            f"• pending feedback > {settings.alert_pending_max}\n"
            f"• generation error rate > {percent(settings.alert_error_rate_max)}\n"
            f"• deploys per day > {settings.alert_deploys_per_day_max}\n"
            f"• average approval time > {settings.alert_approval_hours_max:g} h"
        ),
    ]
    return {"type": "home", "blocks": blocks[:100]}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
