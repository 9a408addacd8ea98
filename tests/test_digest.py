"""The digest against a database seeded at known times (controlled clock): every figure exact, themes,
quiet periods, and a scheduled digest posted once across processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autotrain.errors import TransitionRefused
from autotrain.i18n import Language, speaking
from autotrain.models import DeployOutcome, Rule
from autotrain.monitoring import DigestRule, recurring_themes
from bot.runtime import Runtime
from bot.slack.monitoring_blocks import digest_message
from tests.conftest import ADMIN, HEIGHT_FEEDBACK, REPORTER, WEATHER_FEEDBACK, make_settings, submit
from tests.fakes.clock import FakeClock
from tests.fakes.monitoring import Opener

END = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
START = END - timedelta(hours=24)


def payload(query: str, text: str, feedback_type: str) -> dict[str, Any]:
    return {"query": query, "ai_response": "Mình gợi ý mẫu này", "feedback_text": text, "feedback_type": feedback_type}


async def generate(runtime: Runtime, feedback_id: str) -> Rule:
    return await runtime.service.generate(feedback_id, REPORTER)


async def seed(runtime: Runtime, clock: FakeClock) -> dict[str, Rule]:
    """Activity before, inside and after the 24 h window [START, END)."""
    service = runtime.service
    rules: dict[str, Rule] = {}

    # before the window (END - 30 h)
    clock.now = END - timedelta(hours=30)
    fb1 = await submit(service, WEATHER_FEEDBACK)  # "Trời nóng quá, AI còn tư vấn áo khoác": outside, no theme
    rules["r1"] = await generate(runtime, fb1.feedback_id)
    await service.approve(rules["r1"].rule_id, ADMIN)
    await service.deploy(rules["r1"].rule_id, ADMIN)
    fb2 = await submit(service, payload("váy công sở", "Nên gợi ý thêm váy bút chì", "suggestion"))
    rules["r2"] = await generate(runtime, fb2.feedback_id)  # created outside, approved inside
    await submit(service, payload("quần jean", "Quần jean bị gợi ý sai dáng", "bug"))  # FB-1003 stays pending
    await submit(service, payload("áo thun", "Tư vấn nhiệt tình", "praise"))  # FB-1004, processed at once

    # inside the window
    clock.now = START  # the start is included
    fb5 = await submit(service, payload("phí ship bao nhiêu", "Phí ship hiển thị sai ở giỏ hàng", "bug"))
    clock.now = END - timedelta(hours=20)
    fb6 = await submit(service, payload("áo gì mặc đi làm", "Trời nóng mà bot vẫn gợi ý áo khoác dày", "bug"))
    fb7 = await submit(service, payload("size giày 39", "Size giày nên có bảng quy đổi", "suggestion"))
    await submit(service, payload("đi biển", "Trời nóng thì không mặc áo khoác, tư vấn tốt lắm", "praise"))
    rules["r3"] = await generate(runtime, fb5.feedback_id)
    rules["r4"] = await generate(runtime, fb6.feedback_id)
    rules["r5"] = await generate(runtime, fb7.feedback_id)
    clock.now = END - timedelta(hours=18)
    await service.approve(rules["r2"].rule_id, ADMIN)  # 12 h after it was created
    await service.approve(rules["r3"].rule_id, ADMIN)  # 2 h
    await service.reject(rules["r4"].rule_id, ADMIN, "trùng")
    clock.now = END - timedelta(hours=16)
    await service.approve(rules["r5"].rule_id, ADMIN)  # 4 h
    await service.deploy(rules["r3"].rule_id, ADMIN)
    await service.deploy(rules["r5"].rule_id, ADMIN)
    clock.now = END - timedelta(hours=10)
    await service.rollback(rules["r5"].rule_id, ADMIN)
    await service.rollback(rules["r1"].rule_id, ADMIN)  # deployed before the window, rolled back inside
    clock.now = END - timedelta(hours=5)
    fb9 = await submit(service, payload("áo nào mát", "Áo khoác giữa trời nóng 35 độ?!", "bug"))
    rules["r6"] = await generate(runtime, fb9.feedback_id)  # stays pending

    # at the end (excluded) and after it: none of this is in the digest, and the backlog does not change
    clock.now = END
    fb10 = await submit(service, payload("áo khoác mùa hè", "Ao khoac luc troi nong la sai", "bug"))
    rules["r7"] = await generate(runtime, fb10.feedback_id)
    clock.now = END + timedelta(hours=1)
    await service.approve(rules["r7"].rule_id, ADMIN)
    await service.deploy(rules["r7"].rule_id, ADMIN)
    return rules


async def test_digest_figures_match_the_seeded_database_exactly(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(END)
    runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    rules = await seed(runtime, clock)
    assert [rules[k].rule_id for k in sorted(rules)] == [f"RUL-{1001 + n}" for n in range(7)]

    digest = await runtime.monitor.build_digest(end=END, hours=24)

    assert (digest.start, digest.end) == (START, END)
    assert digest.feedback_by_type == {"bug": 3, "suggestion": 1, "praise": 1}
    assert digest.feedback_received == 5
    assert digest.rules_generated == 4  # RUL-1003..1006
    assert digest.rules_approved == 3  # RUL-1002 (created before the window), RUL-1003, RUL-1005
    assert digest.rules_rejected == 1  # RUL-1004
    assert digest.rules_deployed == 2  # RUL-1003, RUL-1005
    assert digest.rules_rolled_back == 2  # RUL-1005, and RUL-1001 deployed before the window
    assert digest.pending_feedback == 1  # FB-1003 (praise, FB-1004 and FB-1008, is processed when it arrives)
    assert digest.pending_rules == 1  # RUL-1006
    assert digest.oldest_pending_feedback_id == "FB-1003"
    assert digest.oldest_pending_at == END - timedelta(hours=30)
    assert digest.approval_seconds_avg == pytest.approx((12 + 2 + 4) * 3600 / 3)
    assert digest.approval_seconds_p90 == 12 * 3600  # nearest rank: the 3rd of 3
    assert digest.deployed == [
        DigestRule(
            rule_id="RUL-1003",
            module_name=rules["r3"].module_name,
            new_rule=rules["r3"].new_rule,
            outcome="appended",
            status="deployed",
        ),
        DigestRule(  # rolled back inside the window: still listed, marked
            rule_id="RUL-1005",
            module_name=rules["r5"].module_name,
            new_rule=rules["r5"].new_rule,
            outcome="appended",
            status="rolled_back",
        ),
    ]
    assert [(d.module_name, d.noop, d.rolled_back) for d in digest.deployed] == [
        ("fashion_rules.json", False, False),
        ("fashion_rules.json", False, True),
    ]
    # "áo khoác" and "trời nóng" in three in-window texts, shown as they are spelled; the same phrases before
    # and at the end of the window ("Ao khoac luc troi nong") are not counted; words said once are no theme
    assert dict(digest.themes) == {"áo khoác": 3, "trời nóng": 3}
    assert not digest.quiet


async def test_post_digest_uses_the_clock_as_the_end_of_the_window(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(END)
    runtime, sink = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    await seed(runtime, clock)
    clock.now = END + timedelta(hours=10)

    posted = await runtime.monitor.post_digest()
    assert posted is not None
    assert sink.digests == [posted]
    assert (posted.start, posted.end) == (END - timedelta(hours=14), END + timedelta(hours=10))
    # in [END - 14 h, END + 10 h): FB-1009 and FB-1010 (at END); RUL-1006 and RUL-1007 generated, RUL-1007
    # approved and deployed; RUL-1005 and RUL-1001 rolled back at END - 10 h
    assert posted.feedback_by_type == {"bug": 2, "suggestion": 0, "praise": 0}
    assert posted.rules_generated == 2
    assert posted.rules_approved == 1
    assert posted.rules_rejected == 0
    assert posted.rules_deployed == 1
    assert posted.rules_rolled_back == 2
    assert [d.rule_id for d in posted.deployed] == ["RUL-1007"]
    assert posted.approval_seconds_avg == 3600


def test_recurring_themes_fold_diacritics_and_count_each_text_once() -> None:
    texts = [
        "Trời nóng mà vẫn tư vấn áo khoác, áo khoác dày nữa",  # the phrase twice in one text counts once
        "troi nong 36 do van goi y ao khoac",
        "Áo khoác giữa TRỜI NÓNG?!",
        "Size giày bị sai",
        "Phí ship đắt",
    ]
    themes = recurring_themes(texts)
    assert dict(themes) == {"áo khoác": 3, "trời nóng": 3}  # counted folded, shown as most texts spell it
    assert all(n >= 2 for _, n in themes)
    assert not any(word in phrase for phrase, _ in themes for word in ("giày", "ship", "size", "phí"))


def test_recurring_themes_fall_back_to_words_and_ignore_single_mentions() -> None:
    themes = recurring_themes(["giày bị chật", "Giay rộng quá", "mũ đẹp"])
    assert themes == [("giày", 2)]  # one spelling each: the one with its accents
    assert recurring_themes(["một lần duy nhất"]) == []
    assert recurring_themes([]) == []


# a morning's complaints about the stylist, as customers type them (with and without diacritics)
DAY_OF_FEEDBACK = [
    "Trời nóng quá, AI còn tư vấn áo khoác",
    "Trời nóng mà bot vẫn gợi ý áo khoác dày",
    "troi nong qua ma van goi y ao khoac",
    "Nóng 36 độ, áo khoác gì nữa trời",
    "Áo khoác dày giữa trời nóng?!",
    "Mình dáng lùn, mặc đầm maxi bị chìm",
    "minh dang lun ma goi y dam maxi",
    "Gợi ý đầm maxi cho người thấp là sai",
    "Phí ship hiển thị sai ở giỏ hàng",
    "Bot trả lời dài dòng quá, đọc mệt",
    "tra loi dai dong qua",
]


def test_recurring_themes_are_phrases_in_the_feedbacks_own_spelling() -> None:
    themes = recurring_themes(DAY_OF_FEEDBACK)
    assert themes == [
        ("áo khoác", 5),  # "ao khoac" counts with it, shown as most texts spell it
        ("trời nóng", 4),  # not "Nóng 36 độ, áo khoác gì nữa trời": the words are not next to each other
        ("đầm maxi", 3),
        ("trả lời dài dòng", 2),  # the longer phrase first: "dài dòng" is never without it
        ("dáng lùn", 2),
    ]
    shown = {phrase for phrase, _n in themes}
    # no pair across a comma ("nóng quá, AI … áo"), around a stop word ("gợi ý áo" → "gợi áo"), or of one
    assert not shown & {"nóng áo", "nong ao", "gợi áo", "goi ao", "nong qua", "quá ai", "gợi ý", "dài dòng"}


def test_a_theme_is_shown_with_its_accents_when_anyone_typed_them() -> None:
    texts = ["troi nong qua", "troi nong that", "TROI NONG", "Trời nóng quá", "Nắng nóng, trời nóng"]
    assert recurring_themes(texts) == [("trời nóng", 5)]  # three typed it bare, two with its accents
    assert recurring_themes(texts[:3]) == [("troi nong", 3)]  # nobody did


def test_a_phrase_always_inside_a_longer_one_gives_way_to_it() -> None:
    texts = ["Áo khoác dày quá", "áo khoác dày!", "ao khoac day", "Mình cần áo khoác mỏng", "áo khoác mỏng nhé"]
    # "áo khoác" is not always "dày": both, and not "khoác dày" (the same words, shifted)
    assert recurring_themes(texts) == [("áo khoác", 5), ("áo khoác dày", 3), ("áo khoác mỏng", 2)]
    assert recurring_themes(texts[:3]) == [("áo khoác dày", 3)]  # …here it always is


def test_recurring_themes_in_english_and_stop_words_of_both_languages() -> None:
    texts = [
        "The size chart is wrong",
        "size chart wrong again, please fix",
        "It is way too hot for a wool jacket",
        "too hot for that jacket!",
        "Shop ơi, bot này có tư vấn được không vậy",
        "bot nay co tu van duoc khong vay",
    ]
    assert recurring_themes(texts) == [("size chart", 2), ("hot", 2), ("jacket", 2), ("wrong", 2)]


def test_recurring_themes_stay_fast_on_a_days_feedback() -> None:
    """The digest's share of a day's 10,000 texts: all of them different (a user's name in each), so nothing
    is cut up only once and looked up after. Generous bound: it is about 0.2 s on a loaded 2-core machine."""
    import time

    texts = [f"{DAY_OF_FEEDBACK[n % len(DAY_OF_FEEDBACK)]} (Lan{n})" for n in range(10_000)]
    started = time.perf_counter()
    themes = recurring_themes(texts)
    assert time.perf_counter() - started < 2.0
    assert themes[0] == ("áo khoác", 4546)


async def test_the_deployed_list_names_each_rule_once_and_marks_no_ops_and_rollbacks(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(START + timedelta(hours=1))
    runtime, _sink = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    service = runtime.service
    weather = await generate(runtime, (await submit(service, WEATHER_FEEDBACK)).feedback_id)
    again = await generate(
        runtime, (await submit(service, payload("áo khoác mùa hè", "Nóng mà gợi ý áo khoác", "bug"))).feedback_id
    )
    height = await generate(runtime, (await submit(service, HEIGHT_FEEDBACK)).feedback_id)
    link = await generate(runtime, (await submit(service, payload("cho link", "Link bị lỗi 404", "bug"))).feedback_id)
    assert again.new_rule == weather.new_rule  # the same line, proposed twice before either was deployed
    for rule in (weather, again, height, link):
        await service.approve(rule.rule_id, ADMIN)
    clock.advance(hours=1)
    assert (await service.deploy(weather.rule_id, ADMIN)).deployment.outcome is DeployOutcome.REPLACED
    assert (await service.deploy(again.rule_id, ADMIN)).deployment.outcome is DeployOutcome.NOOP
    assert (await service.deploy(height.rule_id, ADMIN, rollout_percent=30)).deployment.outcome is DeployOutcome.CANARY
    await service.deploy(link.rule_id, ADMIN)
    clock.advance(hours=1)
    await service.promote(height.rule_id, ADMIN)  # a second deployment of the same rule
    await service.rollback(link.rule_id, ADMIN)

    clock.now = END
    digest = await runtime.monitor.build_digest()
    assert [(d.rule_id, d.outcome, d.status, d.noop, d.rolled_back) for d in digest.deployed] == [
        (weather.rule_id, "replaced", "deployed", False, False),
        (again.rule_id, "noop", "deployed", True, False),
        (height.rule_id, "promoted", "deployed", False, False),
        (link.rule_id, "appended", "rolled_back", False, True),
    ]
    assert digest.rules_deployed == 4  # rules, not deployments: the canary and its promotion are one
    assert digest.rules_rolled_back == 1

    def deployed_lines(language: Language, title: str) -> list[str]:
        with speaking(language):
            _text, blocks = digest_message(digest, {})
        texts = [block["text"]["text"] for block in blocks if block["type"] == "section"]
        [deployed] = [text for text in texts if text.startswith(title + "\n")]
        return deployed.splitlines()[1:]

    english = deployed_lines(Language.EN, "*Deployed*")
    assert [line.split(" → ")[0] for line in english] == [f"• {d.rule_id}" for d in digest.deployed]
    assert not english[0].endswith(")_")
    assert english[1].endswith(" _(no change: its line was already in the file)_")
    assert english[2].endswith(" _(a canary, promoted to every user)_")
    assert english[3].endswith(" _(rolled back since)_")
    vietnamese = deployed_lines(Language.VI, "*Đã triển khai*")
    assert [line.split(" → ")[0] for line in vietnamese] == [f"• {d.rule_id}" for d in digest.deployed]
    assert vietnamese[1].endswith(" _(không thay đổi gì: dòng này đã có sẵn trong tệp)_")
    assert vietnamese[2].endswith(" _(canary, đã mở rộng cho mọi người dùng)_")
    assert vietnamese[3].endswith(" _(đã hoàn tác sau đó)_")


async def test_a_quiet_day_is_quiet(tmp_path: Path, rules_dir: Path, open_monitored: Opener) -> None:
    clock = FakeClock(END - timedelta(days=2))
    runtime, sink = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    assert (await runtime.monitor.build_digest()).quiet  # nothing at all

    await submit(runtime.service, payload("quần jean", "Quần jean bị gợi ý sai dáng", "bug"))  # two days ago
    clock.now = END
    digest = await runtime.monitor.post_digest()
    assert digest is not None and digest.quiet
    assert digest.feedback_received == 0
    assert digest.themes == [] and digest.deployed == []
    assert digest.pending_feedback == 1  # the backlog is still reported
    assert digest.oldest_pending_feedback_id == "FB-1001"
    assert sink.digests == [digest]

    await submit(runtime.service, payload("áo thun", "Tư vấn tốt", "praise"))
    clock.now = END + timedelta(seconds=1)  # the window's end is exclusive
    assert not (await runtime.monitor.build_digest()).quiet


async def test_a_keyed_digest_is_sent_once_across_two_processes(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    clock = FakeClock(END - timedelta(hours=1))
    settings = make_settings(tmp_path, rules_dir)
    one, one_sink = await open_monitored(settings, clock)
    two, two_sink = await open_monitored(settings, clock)
    await submit(one.service, payload("áo thun", "Tư vấn tốt", "praise"))
    clock.now = END

    first = await one.monitor.post_digest(key="digest:2026-11-26T09:00")
    second = await two.monitor.post_digest(key="digest:2026-11-26T09:00")
    assert first is not None and second is None
    assert (len(one_sink.digests), len(two_sink.digests)) == (1, 0)
    assert one_sink.digests[0].feedback_by_type["praise"] == 1

    # both at once, for the next run: one sends
    results = await asyncio.gather(
        one.monitor.post_digest(key="digest:2026-11-27T09:00"),
        two.monitor.post_digest(key="digest:2026-11-27T09:00"),
    )
    assert sum(result is not None for result in results) == 1
    assert len(one_sink.digests) + len(two_sink.digests) == 2

    # on demand (no key): sent every time, by whoever asks
    assert await one.monitor.post_digest() is not None
    assert await one.monitor.post_digest() is not None
    assert await two.monitor.post_digest() is not None
    assert len(one_sink.digests) + len(two_sink.digests) == 5


async def test_praise_generation_is_refused_but_counted(
    tmp_path: Path, rules_dir: Path, open_monitored: Opener
) -> None:
    """Praise leaves the backlog when processed (no rule) and still counts as feedback received."""
    clock = FakeClock(END - timedelta(hours=1))
    runtime, _ = await open_monitored(make_settings(tmp_path, rules_dir), clock)
    praise = await submit(runtime.service, payload("áo thun", "Tư vấn tốt", "praise"))
    with pytest.raises(TransitionRefused):
        await generate(runtime, praise.feedback_id)
    clock.now = END
    digest = await runtime.monitor.build_digest()
    assert digest.feedback_by_type == {"bug": 0, "suggestion": 0, "praise": 1}
    assert digest.rules_generated == 0
    assert digest.pending_feedback == 0
    assert digest.oldest_pending_feedback_id is None
