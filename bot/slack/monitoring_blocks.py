"""Block Kit of what the monitor posts: alerts, the auto-canary's decisions and the digest.

Every text is in the current language (autotrain/i18n.py): a scheduled post (an alert, the digest) is in
`AUTOTRAIN_LANGUAGE`, a digest asked for with `/autotrain digest` in the asker's. Dates are Slack's own
`<!date^…>` (each reader sees them in their locale), except the digest's day in its header, which Slack
cannot format in plain text.
"""

from __future__ import annotations

from datetime import datetime

from babel.dates import format_date
from babel.numbers import format_decimal

from autotrain.effect import CanaryDecision, CanaryOutcome, CanarySplit, EffectVerdict, RuleEffect, Tally
from autotrain.i18n import N_, _, current_language, ngettext, number
from autotrain.monitoring import AlertAction, AlertDecision, AlertEvent, Digest, DigestCanary, DigestRule, Severity
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

# ---------------------------------------------------------------------- alerts

SEVERITY_MARK = {
    Severity.CRITICAL: N_("🔴 Critical"),
    Severity.WARNING: N_("🟠 Warning"),
    Severity.INFO: N_("🔵 Info"),
}
ALERT_BUTTONS = {
    AlertAction.RUN_ALL: ("alert_run_all", N_("Run all pending")),
    AlertAction.SHOW_PENDING_RULES: ("alert_show_pending", N_("Show pending rules")),
    AlertAction.SHOW_STATUS: ("alert_show_status", N_("Show status")),
    AlertAction.SHOW_DEPLOYMENTS: ("alert_show_deployed", N_("Show deployed rules")),
}
LISTED_RULES = 5  # rules with their own buttons on a rule_not_working alert
LISTED_EFFECTS = 15
LISTED_CANARIES = 10
LISTED_DEPLOYED = 15  # bot/slack/monitoring.py fetches the card links of as many


def _headline(event: AlertEvent, text: str) -> str:
    """ "🟠 Warning: …", or "🟠 Warning (still): …" when it is repeated."""
    severity = _(SEVERITY_MARK[event.severity])
    if event.kind is AlertDecision.REPEAT:
        return _("{severity} (still): {text}", severity=severity, text=text)
    return _("{severity}: {text}", severity=severity, text=text)


def alert_message(event: AlertEvent) -> tuple[str, list[Block]]:
    if event.kind is AlertDecision.RESOLVE:
        text = _("✅ Resolved: {summary}", summary=event.summary)
        return text, [section(text)]
    summary = event.summary
    text = _headline(event, summary)
    advice = escape(event.shown_advice)
    if event.since and event.kind is AlertDecision.REPEAT:
        todo = _("*What to do:* {advice} · crossed {when}", advice=advice, when=when(event.since))
    else:
        todo = _("*What to do:* {advice}", advice=advice)
    blocks: list[Block] = [section(f"*{_headline(event, event.shown_title)}*\n{summary}"), context(todo)]
    if event.action is AlertAction.ROLL_BACK_RULES:
        for rule_id in event.subjects[:LISTED_RULES]:  # one actions block each: an action_id is unique per block
            blocks.append(section(f"*{rule_id}*"))
            rollback = button(RULE_ACTION_IDS[RuleAction.ROLLBACK], _("Roll back"), rule_id, "danger")
            rollback["confirm"] = confirm_dialog(
                _("Roll back {rule_id}?", rule_id=rule_id),
                _("Its line leaves the rule file."),
                _("Roll back"),
                "danger",
            )
            show = {"type": "button", "action_id": "alert_show_rule", "text": plain(_("Show rule")), "value": rule_id}
            blocks.append({"type": "actions", "block_id": f"alert_rule_{rule_id}", "elements": [rollback, show]})
        return text, blocks
    action_id, label = ALERT_BUTTONS[event.action]
    alert_button: Block = {"type": "button", "action_id": action_id, "text": plain(_(label)), "value": event.name}
    if event.action is AlertAction.RUN_ALL:
        alert_button["style"] = "primary"
        alert_button["confirm"] = confirm_dialog(
            _("Run all pending?"), _("Rules are generated for every pending feedback."), _("Run")
        )
    blocks.append({"type": "actions", "block_id": "alert_actions", "elements": [alert_button]})
    return text, blocks


# ---------------------------------------------------------------------- effects and canaries

VERDICT_TEXT = {
    EffectVerdict.WORKING: N_("✅ working"),
    EffectVerdict.NOT_WORKING: N_("❌ not working"),
    EffectVerdict.TOO_EARLY: N_("⏳ too early to say"),
}
DECISION_TEXT = {
    CanaryDecision.PROMOTE: N_("promote it"),
    CanaryDecision.ROLL_BACK: N_("roll it back"),
    CanaryDecision.WAIT: N_("wait for more feedback"),
}


def _fixed(value: float, places: int) -> str:
    """`value` with exactly `places` decimals, in the current language (0.0007 / 0,0007)."""
    return format_decimal(value, format="0." + "0" * places, locale=current_language().value)


def _rate(tally: Tally) -> str:
    return number(tally.per_1000) if tally.per_1000 is not None else "–"


def _effect_line(effect: RuleEffect) -> str:
    p = f", p = {_fixed(effect.p_value, 3)}" if effect.p_value is not None else ""
    return _(
        "• {rule_id}: {before} → {since} ({before_complaints} of {before_feedback} in the {days} before,"
        " {since_complaints} of {since_feedback} since{p}) · {verdict}",
        rule_id=effect.rule_id,
        before=_rate(effect.before),
        since=_rate(effect.since),
        before_complaints=number(effect.before.complaints),
        before_feedback=number(effect.before.feedback),
        days=ngettext("{n} day", "{n} days", effect.window_days),
        since_complaints=number(effect.since.complaints),
        since_feedback=number(effect.since.feedback),
        p=p,
        verdict=_(VERDICT_TEXT[effect.verdict]),
    )


def _split_text(split: CanarySplit) -> str:
    return _(
        "its users {inside_rate} per 1,000 ({inside_complaints} of {inside_feedback}), "
        "the others {outside_rate} ({outside_complaints} of {outside_feedback})",
        inside_rate=_rate(split.inside),
        inside_complaints=number(split.inside.complaints),
        inside_feedback=number(split.inside.feedback),
        outside_rate=_rate(split.outside),
        outside_complaints=number(split.outside.complaints),
        outside_feedback=number(split.outside.feedback),
    )


def _canary_line(canary: DigestCanary) -> str:
    where = {"rule_id": canary.rule_id, "module": escape(canary.module_name), "percent": number(canary.rollout_percent)}
    if canary.split is None:
        return _(
            "• {rule_id} in `{module}` at {percent} %: feedback from users in the canary {inside}, outside {outside}",
            inside=number(canary.feedback_in_canary),
            outside=number(canary.feedback_outside),
            **where,
        )
    return _(
        "• {rule_id} in `{module}` at {percent} %: {split} · the evidence says: {decision}",
        split=_split_text(canary.split),
        decision=_(DECISION_TEXT[canary.split.decision]),
        **where,
    )


def canary_decision_message(outcome: CanaryOutcome) -> tuple[str, list[Block]]:
    """What the auto-canary did, with the figures (posted to the review channel)."""
    split, module = outcome.split, escape(outcome.module_name)
    if outcome.decision is CanaryDecision.PROMOTE:
        text = _("🤖 Auto-canary promoted to every user {rule_id} in {module}", rule_id=outcome.rule_id, module=module)
        p = split.p_fewer
        why = N_(
            "Since the {percent} % canary started, {split}: its users repeat the complaint less often than the"
            " others (Fisher's exact test, p = {p})."
        )
    else:
        text = _("🤖 Auto-canary rolled back {rule_id} in {module}", rule_id=outcome.rule_id, module=module)
        p = split.p_more
        why = N_(
            "Since the {percent} % canary started, {split}: its users repeat it more often than the others"
            " (Fisher's exact test, p = {p})."
        )
    detail = f"*{text}*"
    if p is not None:
        evidence = _(why, percent=number(split.percent), split=_split_text(split), p=_fixed(p, 4))
        detail += "\n" + evidence
    return text, [section(detail), context(_("Decided by `AUTOTRAIN_CANARY_AUTO_DECIDE`; the card shows the change."))]


# ---------------------------------------------------------------------- the digest


def _day(moment: datetime) -> str:
    """26 Nov 2026 / 26 thg 11 2026."""
    return format_date(moment, "d MMM y", locale=current_language().value)


def _backlog(digest: Digest) -> tuple[str, str]:
    """("3 pending feedback", "1 rule to review")."""
    return (
        ngettext("{n} pending feedback", "{n} pending feedback", digest.pending_feedback),
        ngettext("{n} rule to review", "{n} rules to review", digest.pending_rules),
    )


def _more(shown: int, total: int) -> str:
    return "\n" + ngettext("…and {n} more", "…and {n} more", total - shown) if total > shown else ""


def _deployed_line(rule: DigestRule, permalinks: dict[str, str]) -> str:
    link = permalinks.get(rule.rule_id)
    name = f"<{link}|{rule.rule_id}>" if link else rule.rule_id
    marks = []
    if rule.noop:
        marks.append(_("no change: its line was already in the file"))
    elif rule.outcome == "canary":
        marks.append(_("a canary"))
    elif rule.outcome == "promoted":
        marks.append(_("a canary, promoted to every user"))
    if rule.rolled_back:
        marks.append(_("rolled back since"))
    mark = " _(" + "; ".join(marks) + ")_" if marks else ""
    return f"• {name} → `{escape(rule.module_name)}`: {escaped(rule.new_rule, 150)}{mark}"


def digest_message(digest: Digest, permalinks: dict[str, str]) -> tuple[str, list[Block]]:
    day = _day(digest.end)
    pending_feedback, pending_rules = _backlog(digest)
    if digest.quiet:
        text = _(
            "🌙 Auto-Train digest, {day}: a quiet day — no feedback, no rule changes. Backlog: {feedback}, {rules}.",
            day=day,
            feedback=pending_feedback,
            rules=pending_rules,
        )
        return text, [section(text)]
    received = number(digest.feedback_received)
    types = ", ".join(f"{_(kind)} {number(n)}" for kind, n in digest.feedback_by_type.items() if n)
    if digest.oldest_pending_feedback_id:
        pending_feedback = _(
            "{pending} (oldest {feedback_id}, since {when})",
            pending=pending_feedback,
            feedback_id=digest.oldest_pending_feedback_id,
            when=when(digest.oldest_pending_at),
        )
    lines = [
        _("*Feedback received* {n} ({types})", n=received, types=types)
        if types
        else _("*Feedback received* {n}", n=received),
        _(
            "*Rules* generated {generated} · approved {approved} · rejected {rejected} · deployed {deployed} · "
            "rolled back {rolled_back}",
            generated=number(digest.rules_generated),
            approved=number(digest.rules_approved),
            rejected=number(digest.rules_rejected),
            deployed=number(digest.rules_deployed),
            rolled_back=number(digest.rules_rolled_back),
        ),
        _("*Backlog* {feedback} · {rules}", feedback=pending_feedback, rules=pending_rules),
        _(
            "*Time to approve* average {average}, p90 {p90}",
            average=duration(digest.approval_seconds_avg),
            p90=duration(digest.approval_seconds_p90),
        ),
    ]
    blocks: list[Block] = [header(_("Auto-Train digest · {day}", day=day)), section("\n".join(lines))]
    if digest.themes:
        themes = " · ".join(f"“{escape(theme)}” ×{number(count)}" for theme, count in digest.themes)
        blocks.append(section(_("*Recurring themes* {themes}", themes=themes)))
    if digest.effects:
        effects = "\n".join(_effect_line(e) for e in digest.effects[:LISTED_EFFECTS])
        title = _("*Did it work?* the complaint per 1,000 feedbacks, before the deploy → since")
        blocks.append(section(f"{title}\n{effects}{_more(LISTED_EFFECTS, len(digest.effects))}"))
    if digest.canaries:
        canaries = "\n".join(_canary_line(c) for c in digest.canaries[:LISTED_CANARIES])
        blocks.append(section(_("*Canaries* (since each started)") + "\n" + canaries))
    if digest.deployed:
        deployed = "\n".join(_deployed_line(rule, permalinks) for rule in digest.deployed[:LISTED_DEPLOYED])
        more = _more(LISTED_DEPLOYED, len(digest.deployed))
        blocks.append(section(_("*Deployed*") + "\n" + deployed + more))
    text = _(
        "Auto-Train digest {day}: {feedback} feedback, {generated}, {deployed}",
        day=day,
        feedback=number(digest.feedback_received),
        generated=ngettext("{n} rule generated", "{n} rules generated", digest.rules_generated),
        deployed=ngettext("{n} deployed", "{n} deployed", digest.rules_deployed),
    )
    return text, blocks
