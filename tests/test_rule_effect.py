"""Did the rule work? (issue 12): the effect of a deployed rule from its complaint's recurrences, canaries
decided by that evidence, the rule_not_working alert and the digest's "Did it work?" section.

Real SQLite, the real runtime on a controlled clock, Slack pointed at the fake Web API, webhooks to a receiver
on loopback; the statistics are scipy's Fisher exact test, checked against figures computed here by hand.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from autotrain.clustering import DEFAULT_THRESHOLD
from autotrain.effect import CanaryDecision, EffectSettings, EffectVerdict, Tally, judge, split_canary
from autotrain.models import FeedbackIn, RuleStatus
from autotrain.policy import Actor, Role
from autotrain.rollout import in_rollout
from bot.runtime import Runtime, open_runtime
from bot.slack import monitoring_blocks
from tests.conftest import ADMIN, REPORTER, make_settings
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import REVIEW_CHANNEL, block_texts, ok, slack_settings
from tests.test_webhooks import SECRET, Receiver, receivers  # noqa: F401  (fixture)

JACKET = [
    ("Trời nóng quá mà AI còn tư vấn áo khoác", "tìm áo cho trời 35 độ"),
    ("troi nong 35 do ma bot goi y ao khoac", "ao mac di choi troi nong"),
    ("troi nongg qua ma AI con tu van ao khoacc", "tim ao cho troi 35 do"),
    ("Trời nóng quá mà AI còn tư vấn áo khoác", "tìm áo cho trời 35 độ"),
    ("Trời nóng thế này mà bot vẫn tư vấn áo khoác", "áo cho trời nóng 35 độ"),
]
ANSWER = "Mình gợi ý áo khoác nỉ này nhé"
# unrelated to the jacket complaint and to each other
OTHER = [
    ("Giao hàng chậm quá", "khi nào nhận được hàng"),
    ("Mã giảm giá không áp dụng được", "mã giảm giá tháng này"),
    ("Ảnh sản phẩm bị mờ", "xem ảnh váy lụa"),
    ("Size giày nên có bảng quy đổi", "size giày 39"),
    ("Không tìm thấy nút thanh toán", "thanh toán thế nào"),
    ("Bot trả lời bằng tiếng Anh", "tư vấn quần jean"),
]


def feedback(text: str, query: str, user_id: str = "u-1") -> FeedbackIn:
    return FeedbackIn(query=query, ai_response=ANSWER, feedback_text=text, feedback_type="bug", user_id=user_id)


# ---------------------------------------------------------------------- the judgement, on its own


def test_fisher_figures_match_a_hand_computation() -> None:
    """One-sided Fisher exact p: the probability, under the hypergeometric law with the margins fixed, of a
    table at least as extreme. 3 of 10 before, 0 of 10 since: p = C(10,3)·C(10,0) / C(20,3) = 120 / 1140."""
    p, verdict = judge(Tally(feedback=10, complaints=3), Tally(feedback=10, complaints=0), EffectSettings(min_sample=5))
    assert p == pytest.approx(math.comb(10, 3) / math.comb(20, 3), abs=1e-6)
    assert verdict is EffectVerdict.TOO_EARLY  # better, but p = 0.105: not significant at 0.05


@pytest.mark.parametrize(
    ("before", "since", "verdict"),
    [
        ((40, 12), (40, 1), EffectVerdict.WORKING),  # 300 → 25 per 1,000
        ((40, 4), (40, 6), EffectVerdict.NOT_WORKING),  # 100 → 150: as often as before, or more
        ((40, 4), (40, 4), EffectVerdict.NOT_WORKING),
        ((40, 4), (40, 2), EffectVerdict.TOO_EARLY),  # better so far, not significantly
        ((40, 12), (20, 0), EffectVerdict.TOO_EARLY),  # fewer feedbacks since than the minimum sample
        ((40, 1), (40, 0), EffectVerdict.TOO_EARLY),  # nothing came back, nothing to prove either way
    ],
)
def test_verdicts(before: tuple[int, int], since: tuple[int, int], verdict: EffectVerdict) -> None:
    settings = EffectSettings(min_sample=30, alpha=0.05)
    got = judge(
        Tally(feedback=before[0], complaints=before[1]), Tally(feedback=since[0], complaints=since[1]), settings
    )
    assert got[1] is verdict


def test_a_canary_split_decides_only_on_significant_evidence() -> None:
    settings = EffectSettings(min_sample=10, alpha=0.05)
    quiet, loud = Tally(feedback=12, complaints=0), Tally(feedback=12, complaints=8)
    assert split_canary(10, quiet, loud, settings).decision is CanaryDecision.PROMOTE
    assert split_canary(10, loud, quiet, settings).decision is CanaryDecision.ROLL_BACK
    assert split_canary(10, Tally(feedback=12, complaints=3), Tally(feedback=12, complaints=4), settings).decision is (
        CanaryDecision.WAIT
    )
    assert split_canary(10, Tally(feedback=5, complaints=0), loud, settings).decision is CanaryDecision.WAIT


# ---------------------------------------------------------------------- through the runtime


@pytest.fixture
async def world(
    tmp_path: Path,
    rules_dir: Path,
    slack_api: FakeSlackApi,
    receivers: Callable[[], Receiver],  # noqa: F811
) -> AsyncIterator[Any]:
    opened: list[Runtime] = []
    receiver = receivers()

    async def opener(clock: FakeClock, **overrides: Any) -> Runtime:
        settings = slack_settings(
            tmp_path,
            rules_dir,
            slack_api,
            auto_generate=False,
            cluster_threshold=DEFAULT_THRESHOLD,
            alert_channel="CALERT",
            webhook_urls=(receiver.url,),
            webhook_secret=SECRET,
            effect_min_sample=10,
            **overrides,
        )
        runtime = await open_runtime(settings, clock=clock)
        opened.append(runtime)
        return runtime

    opener.receiver = receiver  # type: ignore[attr-defined]
    yield opener
    for runtime in opened:
        await runtime.close()


async def deployed_jacket_rule(runtime: Runtime, clock: FakeClock, *, rollout_percent: int = 100) -> str:
    """A week of feedback (the complaint twice among 10), then its rule deployed."""
    service = runtime.service
    first = await service.submit(feedback(*JACKET[0]), REPORTER)
    clock.advance(hours=1)
    second = await service.submit(feedback(*JACKET[1], user_id="u-2"), REPORTER)
    for n, (text, query) in enumerate(OTHER + OTHER[:2]):
        clock.advance(hours=1)
        await service.submit(feedback(f"{text} ({n})", query, user_id=f"u-{n + 3}"), REPORTER)
    rule = await service.generate(first.feedback_id, REPORTER)
    # the same complaint, asked to generate: attached to that rule instead of a second one
    assert (await service.generate(second.feedback_id, REPORTER)).rule_id == rule.rule_id
    rule = await service.get_rule(rule.rule_id)
    assert rule.cluster_size == 2
    clock.advance(hours=1)
    await service.approve(rule.rule_id, ADMIN)
    await service.deploy(rule.rule_id, ADMIN, rollout_percent=rollout_percent)
    clock.advance(minutes=5)
    return rule.rule_id


async def test_the_effect_counts_recurrences_since_the_deploy_and_nothing_unrelated(world: Any) -> None:
    clock = FakeClock()
    runtime = await world(clock)
    rule_id = await deployed_jacket_rule(runtime, clock)

    recurrences = []
    for n, (text, query) in enumerate(JACKET[1:]):  # 4 paraphrases of its complaint
        clock.advance(minutes=10)
        recurrences.append(await runtime.service.submit(feedback(text, query, user_id=f"v-{n}"), REPORTER))
    for n, (text, query) in enumerate(OTHER[:3]):
        clock.advance(minutes=10)
        unrelated = await runtime.service.submit(feedback(f"{text}!", query, user_id=f"w-{n}"), REPORTER)
        assert unrelated.recurrence_of is None
    assert [f.recurrence_of for f in recurrences] == [rule_id] * 4

    detail = await runtime.service.rule_detail(rule_id)
    assert detail.recurrences == 4
    effect = detail.effect
    assert effect is not None
    assert (effect.before.feedback, effect.before.complaints) == (10, 2)
    assert (effect.since.feedback, effect.since.complaints) == (7, 4)
    assert effect.verdict is EffectVerdict.TOO_EARLY  # 7 feedbacks since: under the minimum sample of 10
    assert effect.canary is None

    for n in range(3):
        clock.advance(minutes=10)
        await runtime.service.submit(feedback(*JACKET[n % 4], user_id=f"x-{n}"), REPORTER)
    effect = (await runtime.service.rule_detail(rule_id)).effect
    assert effect is not None and (effect.since.feedback, effect.since.complaints) == (10, 7)
    assert effect.verdict is EffectVerdict.NOT_WORKING  # 700 per 1,000 since, against 200 before


async def seeded_canary_feedback(runtime: Runtime, clock: FakeClock, rule_id: str, *, quiet_inside: bool) -> None:
    """12 users inside the canary and 12 outside, each sending one feedback: one side repeats the complaint
    8 times in 12, the other never does."""
    inside = [u for u in (f"user-{n}" for n in range(2000)) if in_rollout(rule_id, u, 10)][:12]
    outside = [u for u in (f"user-{n}" for n in range(2000)) if not in_rollout(rule_id, u, 10)][:12]
    complaining, quiet = (outside, inside) if quiet_inside else (inside, outside)
    for n, user in enumerate(complaining):
        clock.advance(minutes=1)
        text, query = JACKET[n % len(JACKET)] if n < 8 else OTHER[n % len(OTHER)]
        await runtime.service.submit(feedback(text if n < 8 else f"{text} [{n}]", query, user_id=user), REPORTER)
    for n, user in enumerate(quiet):
        clock.advance(minutes=1)
        text, query = OTHER[n % len(OTHER)]
        await runtime.service.submit(feedback(f"{text} <{n}>", query, user_id=user), REPORTER)


@pytest.mark.parametrize("quiet_inside", [True, False], ids=["canary-users-stop-complaining", "they-complain-more"])
async def test_the_auto_canary_decides_by_evidence(world: Any, slack_api: FakeSlackApi, quiet_inside: bool) -> None:
    clock = FakeClock()
    runtime = await world(clock, canary_auto_decide=True)
    rule_id = await deployed_jacket_rule(runtime, clock, rollout_percent=10)
    assert await runtime.service.decide_canaries() == []  # no feedback since it started: wait
    await seeded_canary_feedback(runtime, clock, rule_id, quiet_inside=quiet_inside)

    split = (await runtime.service.rule_detail(rule_id)).effect.canary  # type: ignore[union-attr]
    assert split is not None and split.percent == 10
    assert (split.inside.feedback, split.outside.feedback) == (12, 12)

    [outcome] = await runtime.service.decide_canaries()
    await runtime.service.drain()
    rule = await runtime.service.get_rule(rule_id)
    if quiet_inside:
        assert outcome.decision is CanaryDecision.PROMOTE
        assert rule.status is RuleStatus.DEPLOYED and rule.rollout_percent == 100
        expected_audit: list[tuple[str, str | None]] = [("rule_deployed", "deployed"), ("deployment_applied", None)]
    else:
        assert outcome.decision is CanaryDecision.ROLL_BACK
        assert rule.status is RuleStatus.ROLLED_BACK
        expected_audit = [("rule_rolled_back", "rolled_back"), ("rollback_applied", None)]
    assert await runtime.service.decide_canaries() == []  # decided once: never both

    audit = await runtime.store.list_audit(subject_id=rule_id, limit=50, offset=0)
    mine = [(entry.action, entry.to_state) for entry in audit.items if entry.actor == "auto-canary"]
    assert mine == expected_audit, [(e.action, e.actor) for e in audit.items]

    posts = [c for c in slack_api.calls_to("chat.postMessage") if ok(c) and "Auto-canary" in c.params["text"]]
    assert len(posts) == 1 and posts[0].params["channel"] == REVIEW_CHANNEL
    said = block_texts(posts[0].params["blocks"])
    verb = "promoted to every user" if quiet_inside else "rolled back"
    assert f"Auto-canary {verb} {rule_id}" in said
    assert "its users 0 per 1,000 (0 of 12)" in said or "its users 666.7 per 1,000 (8 of 12)" in said
    assert "Fisher's exact test, p = 0.0007" in said  # [[0, 12], [8, 4]], one-sided

    await runtime.webhooks.deliver_due()  # type: ignore[union-attr]
    kinds = [r.json["type"] for r in world.receiver.requests]
    assert "canary_decided" in kinds
    assert ("rule_promoted" if quiet_inside else "rule_rolled_back") in kinds
    decided = next(r.json for r in world.receiver.requests if r.json["type"] == "canary_decided")
    assert decided["data"]["rule_id"] == rule_id and decided["data"]["decision"] == outcome.decision.value


async def test_no_auto_decision_on_a_canary_an_admin_already_promoted(world: Any) -> None:
    clock = FakeClock()
    runtime = await world(clock)
    rule_id = await deployed_jacket_rule(runtime, clock, rollout_percent=10)
    await seeded_canary_feedback(runtime, clock, rule_id, quiet_inside=True)
    await runtime.service.promote(rule_id, ADMIN)  # the admin first
    assert await runtime.service.decide_canaries() == []


async def test_rule_not_working_fires_with_its_buttons_and_resolves(world: Any, slack_api: FakeSlackApi) -> None:
    clock = FakeClock()
    runtime = await world(clock)
    rule_id = await deployed_jacket_rule(runtime, clock)
    for n in range(10):
        clock.advance(minutes=10)
        text, query = JACKET[n % len(JACKET)] if n % 2 == 0 else OTHER[n % len(OTHER)]
        await runtime.service.submit(
            feedback(text if n % 2 == 0 else f"{text} #{n}", query, user_id=f"y-{n}"), REPORTER
        )
    effect = (await runtime.service.rule_detail(rule_id)).effect
    assert effect is not None and effect.verdict is EffectVerdict.NOT_WORKING and effect.since.complaints == 5

    fired = [e for e in await runtime.monitor.check_alerts() if e.name == "rule_not_working"]
    assert [(e.kind.value, e.subjects) for e in fired] == [("fired", [rule_id])]
    [post] = [c for c in slack_api.calls_to("chat.postMessage") if c.params.get("channel") == "CALERT"]
    elements = [el for b in post.params["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert [(el["action_id"], el["value"]) for el in elements] == [
        ("rule_rollback", rule_id),
        ("alert_show_rule", rule_id),
    ]
    assert slack_api.violations == []

    await runtime.service.rollback(rule_id, Actor("U_ADMIN", Role.ADMIN))
    resolved = [e for e in await runtime.monitor.check_alerts() if e.name == "rule_not_working"]
    assert [e.kind.value for e in resolved] == ["resolved"]


async def test_the_digest_says_whether_each_rule_worked(world: Any) -> None:
    clock = FakeClock()
    runtime = await world(clock)
    rule_id = await deployed_jacket_rule(runtime, clock)
    for n in range(12):
        clock.advance(minutes=10)
        text, query = OTHER[n % len(OTHER)]
        await runtime.service.submit(feedback(f"{text} ~{n}", query, user_id=f"z-{n}"), REPORTER)
    digest = await runtime.monitor.build_digest()
    [effect] = digest.effects
    assert effect.rule_id == rule_id
    assert (effect.before.complaints, effect.before.feedback, effect.since.complaints, effect.since.feedback) == (
        2,
        10,
        0,
        12,
    )
    _, rendered = monitoring_blocks.digest_message(digest, {})
    text = block_texts(rendered)
    assert "*Did it work?*" in text
    assert f"• {rule_id}: 200 → 0 (2 of 10 in the 7 days before, 0 of 12 since, p = " in text
    assert "⏳ too early to say" in text  # better, but 2 in 10 against 0 in 12 is not yet significant


def test_settings_parse_the_effect_options(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(
        tmp_path, rules_dir, effect_window_days=14, effect_min_sample=50, effect_alpha=0.01, canary_auto_decide=True
    )
    assert (settings.effect_window_days, settings.effect_min_sample, settings.effect_alpha) == (14, 50, 0.01)
    assert settings.canary_auto_decide is True
