"""Block Kit of what the monitor posts: alerts, the auto-canary's decisions and the digest."""

from __future__ import annotations

from autotrain.effect import CanaryDecision, CanaryOutcome, CanarySplit, EffectVerdict, RuleEffect, Tally
from autotrain.monitoring import AlertAction, AlertDecision, AlertEvent, Digest, DigestCanary, Severity
from autotrain.policy import RuleAction
from bot.slack.blocks import (
    RULE_ACTION_IDS,
    Block,
    button,
    confirm_dialog,
    context,
    duration,
    escape,
    escaped,
    header,
    plain,
    section,
    when,
)

# ---------------------------------------------------------------------- alerts and digests

SEVERITY_MARK = {Severity.CRITICAL: "🔴 Critical", Severity.WARNING: "🟠 Warning", Severity.INFO: "🔵 Info"}
ALERT_BUTTONS = {
    AlertAction.RUN_ALL: ("alert_run_all", "Run all pending"),
    AlertAction.SHOW_PENDING_RULES: ("alert_show_pending", "Show pending rules"),
    AlertAction.SHOW_STATUS: ("alert_show_status", "Show status"),
    AlertAction.SHOW_DEPLOYMENTS: ("alert_show_deployed", "Show deployed rules"),
}


def alert_message(event: AlertEvent) -> tuple[str, list[Block]]:
    if event.kind is AlertDecision.RESOLVE:
        text = f"✅ Resolved: {event.summary}"
        return text, [section(text)]
    again = " (still)" if event.kind is AlertDecision.REPEAT else ""
    text = f"{SEVERITY_MARK[event.severity]}{again}: {event.summary}"
    blocks: list[Block] = [
        section(f"*{SEVERITY_MARK[event.severity]}{again}: {event.title}*\n{event.summary}"),
        context(
            f"*What to do:* {escape(event.advice)}"
            + (f" · crossed {when(event.since)}" if event.since and event.kind is AlertDecision.REPEAT else "")
        ),
    ]
    if event.action is AlertAction.ROLL_BACK_RULES:
        for rule_id in event.subjects[:5]:  # one actions block each: a button's action_id is unique per block
            blocks.append(section(f"*{rule_id}*"))
            rollback = button(RULE_ACTION_IDS[RuleAction.ROLLBACK], "Roll back", rule_id, "danger")
            rollback["confirm"] = confirm_dialog(
                f"Roll back {rule_id}?", "Its line leaves the rule file.", "Roll back", "danger"
            )
            show = {"type": "button", "action_id": "alert_show_rule", "text": plain("Show rule"), "value": rule_id}
            blocks.append({"type": "actions", "block_id": f"alert_rule_{rule_id}", "elements": [rollback, show]})
        return text, blocks
    action_id, label = ALERT_BUTTONS[event.action]
    alert_button: Block = {"type": "button", "action_id": action_id, "text": plain(label), "value": event.name}
    if event.action is AlertAction.RUN_ALL:
        alert_button["style"] = "primary"
        alert_button["confirm"] = confirm_dialog(
            "Run all pending?", "Rules are generated for every pending feedback.", "Run"
        )
    blocks.append({"type": "actions", "block_id": "alert_actions", "elements": [alert_button]})
    return text, blocks


VERDICT_TEXT = {
    EffectVerdict.WORKING: "✅ working",
    EffectVerdict.NOT_WORKING: "❌ not working",
    EffectVerdict.TOO_EARLY: "⏳ too early to say",
}
DECISION_TEXT = {
    CanaryDecision.PROMOTE: "promote it",
    CanaryDecision.ROLL_BACK: "roll it back",
    CanaryDecision.WAIT: "wait for more feedback",
}


def _rate(tally: Tally) -> str:
    return f"{tally.per_1000:g}" if tally.per_1000 is not None else "n/a"


def _effect_line(effect: RuleEffect) -> str:
    p = f", p = {effect.p_value:.3f}" if effect.p_value is not None else ""
    return (
        f"• {effect.rule_id}: {_rate(effect.before)} → {_rate(effect.since)} "
        f"({effect.before.complaints} of {effect.before.feedback} in the {effect.window_days} days before, "
        f"{effect.since.complaints} of {effect.since.feedback} since{p}) · {VERDICT_TEXT[effect.verdict]}"
    )


def _split_text(split: CanarySplit) -> str:
    return (
        f"its users {_rate(split.inside)} per 1,000 ({split.inside.complaints} of {split.inside.feedback}), "
        f"the others {_rate(split.outside)} ({split.outside.complaints} of {split.outside.feedback})"
    )


def _canary_line(canary: DigestCanary) -> str:
    head = f"• {canary.rule_id} in `{escape(canary.module_name)}` at {canary.rollout_percent} %: "
    if canary.split is None:
        return (
            head + f"feedback from users in the canary {canary.feedback_in_canary}, outside {canary.feedback_outside}"
        )
    return head + f"{_split_text(canary.split)} · the evidence says: {DECISION_TEXT[canary.split.decision]}"


def canary_decision_message(outcome: CanaryOutcome) -> tuple[str, list[Block]]:
    """What the auto-canary did, with the figures (posted to the review channel)."""
    verb = "promoted to every user" if outcome.decision is CanaryDecision.PROMOTE else "rolled back"
    split = outcome.split
    p = split.p_fewer if outcome.decision is CanaryDecision.PROMOTE else split.p_more
    text = f"🤖 Auto-canary {verb} {outcome.rule_id} in {escape(outcome.module_name)}"
    why = "repeat the complaint less often" if outcome.decision is CanaryDecision.PROMOTE else "repeat it more often"
    detail = (
        f"*{text}*\nSince the {split.percent} % canary started, {_split_text(split)}: its users {why} than the"
        f" others (Fisher's exact test, p = {p:.4f})."
        if p is not None
        else f"*{text}*"
    )
    return text, [section(detail), context("Decided by `AUTOTRAIN_CANARY_AUTO_DECIDE`; the card shows the change.")]


def digest_message(digest: Digest, permalinks: dict[str, str]) -> tuple[str, list[Block]]:
    day = digest.end.strftime("%d %b %Y")
    if digest.quiet:
        text = (
            f"🌙 Auto-Train digest, {day}: a quiet day — no feedback, no rule changes. "
            f"Backlog: {digest.pending_feedback} pending feedback, {digest.pending_rules} rules to review."
        )
        return text, [section(text)]
    types = ", ".join(f"{kind} {n}" for kind, n in digest.feedback_by_type.items() if n)
    oldest = (
        f" (oldest {digest.oldest_pending_feedback_id}, since {when(digest.oldest_pending_at)})"
        if digest.oldest_pending_feedback_id
        else ""
    )
    blocks: list[Block] = [
        header(f"Auto-Train digest · {day}"),
        section(
            f"*Feedback received* {digest.feedback_received}" + (f" ({types})" if types else "") + "\n"
            f"*Rules* generated {digest.rules_generated} · approved {digest.rules_approved} · "
            f"rejected {digest.rules_rejected} · deployed {digest.rules_deployed} · "
            f"rolled back {digest.rules_rolled_back}\n"
            f"*Backlog* {digest.pending_feedback} pending feedback{oldest} · {digest.pending_rules} rules to review\n"
            f"*Time to approve* average {duration(digest.approval_seconds_avg)}, "
            f"p90 {duration(digest.approval_seconds_p90)}"
        ),
    ]
    if digest.themes:
        themes = " · ".join(f"“{escape(theme)}” ×{count}" for theme, count in digest.themes)
        blocks.append(section(f"*Recurring themes* {themes}"))
    if digest.effects:
        lines = [_effect_line(e) for e in digest.effects[:15]]
        more = f"\n…and {len(digest.effects) - 15} more" if len(digest.effects) > 15 else ""
        blocks.append(
            section(
                "*Did it work?* the complaint per 1,000 feedbacks, before the deploy → since\n"
                + "\n".join(lines)
                + more
            )
        )
    if digest.canaries:
        canaries = "\n".join(_canary_line(c) for c in digest.canaries[:10])
        blocks.append(section(f"*Canaries* (since each started)\n{canaries}"))
    if digest.deployed:
        lines = []
        for rule in digest.deployed[:15]:
            link = permalinks.get(rule.rule_id)
            name = f"<{link}|{rule.rule_id}>" if link else rule.rule_id
            lines.append(f"• {name} → `{escape(rule.module_name)}`: {escaped(rule.new_rule, 150)}")
        more = f"\n…and {len(digest.deployed) - 15} more" if len(digest.deployed) > 15 else ""
        blocks.append(section("*Deployed*\n" + "\n".join(lines) + more))
    text = (
        f"Auto-Train digest {day}: {digest.feedback_received} feedback, {digest.rules_generated} rules generated, "
        f"{digest.rules_deployed} deployed"
    )
    return text, blocks
