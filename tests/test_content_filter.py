"""The content filter: Vietnamese and English, with and without diacritics, teencode-aware; offensive feedback
is stored flagged `offensive` and closed as rejected (never dropped), and no rule is ever generated from it.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from autotrain import content_filter
from autotrain.content_filter import OFFENSIVE, offensive_terms, offensive_words
from autotrain.policy import Role
from autotrain.settings import Settings
from autotrain.text import words
from bot.api import create_app
from tests.conftest import HEIGHT_FEEDBACK, WEATHER_FEEDBACK, bearer, make_settings
from tests.slack_support import OTHER_USER, REVIEW_CHANNEL, SlackSimulator

ADMIN = bearer(Role.ADMIN, "U_ADMIN")
REPORTER = bearer(Role.REPORTER, "chatbot")
WORD_LIST = Path(content_filter.__file__).parent / "data" / "offensive_words.txt"

# ---------------------------------------------------------------------- the filter itself

FLAGGED: list[tuple[str, str]] = [
    # Vietnamese with diacritics, any case, composed or decomposed (NFD, as some keyboards send it)
    ("Địt mẹ cái bot này", "địt"),
    ("vãi lồn thật sự", "lồn"),
    ("tư vấn đéo gì vậy", "đéo"),
    ("thằng chó bot", "thằng chó"),
    ("đồ khốn nạn", "khốn nạn"),
    (unicodedata.normalize("NFD", "tư vấn như lồn"), "lồn"),
    # Vietnamese typed without diacritics: the unambiguous bare forms
    ("dit me shop", "dit me"),
    ("vai lon luon", "vai lon"),
    # teencode, with and without đ
    ("vcl tư vấn gì kỳ vậy", "vcl"),
    ("VCL", "vcl"),
    ("dm bot ngu", "dm"),
    ("Đm, lại gợi ý áo khoác", "đm"),
    ("ĐM", "đm"),
    ("tư vấn như cc", "cc"),
    ("dcm, sai hoài", "dcm"),
    ("đcm", "đcm"),
    ("vkl thật", "vkl"),
    # English
    ("fuck this bot", "fuck"),
    ("WHAT THE FUCK!!!", "fuck"),
    ("this is bullshit", "bullshit"),
    ("wtf is this answer", "wtf"),
]

CLEAN: list[str] = [
    # ordinary Vietnamese fashion feedback
    "Trời nóng quá, AI còn tư vấn áo khoác",
    "Mình dáng lùn, mặc maxi bị chìm",
    "Tư vấn rất hay, cảm ơn!",
    "troi nong qua ma goi y ao khoac",
    # words that only look like entries once their accents are gone
    "lon nước ngọt để trong tủ lạnh",  # lon (a can) vs lồn
    "mua vài lon nước",  # vài lon (a few cans) vs vai lon
    "các mẫu áo này đẹp",  # các vs cặc
    "cac mau ao nay dep",
    "đi chơi mặc gì",  # đi vs đĩ
    "di choi mac gi",
    "áo có hình con chó",  # chó alone is an animal
    "sợ đụng hàng với bạn",  # đụng (bump into) vs đụ
    "buổi tối mặc gì",  # buổi vs buồi
    "mặc lộn trái",  # lộn (inside out) vs lồn
    "địa chỉ shop ở đâu",  # địa vs địt
    "đếm số size còn lại",  # đếm vs đếch
    "cặp sách màu be",
    # English words that contain an entry
    "Scunthorpe cocktail dress for a class assessment",
    "shiitake print shirt",
]


@pytest.mark.parametrize(("text", "term"), FLAGGED, ids=[text for text, _ in FLAGGED])
def test_offensive_text_is_flagged(text: str, term: str) -> None:
    found = offensive_terms(text)
    assert term in found, found


@pytest.mark.parametrize("text", CLEAN)
def test_ordinary_text_is_not_flagged(text: str) -> None:
    assert offensive_terms(text) == []


def test_any_of_several_texts_is_looked_at() -> None:
    assert offensive_terms("áo khoác", "vcl") == ["vcl"]
    assert offensive_terms("dm", "dm") == ["dm"]  # each term once


# ---------------------------------------------------------------------- the word list is data


def entry_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_non_comment_line_of_the_shipped_list_is_an_entry() -> None:
    shipped = WORD_LIST.read_text(encoding="utf-8")
    lines = entry_lines(shipped)
    assert len(lines) >= 30
    assert list(offensive_words()) == lines
    assert len(set(lines)) == len(lines), "an entry is listed twice"
    for line in lines:
        assert words(line), f"{line!r} has no word to match"
        assert line == unicodedata.normalize("NFC", line.lower()), f"{line!r} is not lower-case NFC"
    for teencode in ("vcl", "dm", "đm", "cc", "dcm", "fuck"):
        assert teencode in lines


@pytest.mark.parametrize("entry", entry_lines(WORD_LIST.read_text(encoding="utf-8")))
def test_every_entry_flags_itself(entry: str) -> None:
    assert entry in offensive_terms(f"shop này {entry.upper()} thật"), entry


@pytest.fixture
def extended_word_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped list plus one line, read from a copy (the shipped file is never touched)."""
    package = tmp_path / "package"
    (package / "data").mkdir(parents=True)
    shipped = resources.files("autotrain").joinpath("data/offensive_words.txt").read_text(encoding="utf-8")
    (package / "data" / "offensive_words.txt").write_text(shipped + "xấu xa quá\n", encoding="utf-8")
    monkeypatch.setattr(content_filter, "resources", SimpleNamespace(files=lambda _: package))
    offensive_words.cache_clear()
    content_filter._matcher.cache_clear()
    try:
        yield package
    finally:
        monkeypatch.undo()
        offensive_words.cache_clear()
        content_filter._matcher.cache_clear()


def test_adding_a_word_is_adding_a_line(extended_word_list: Path) -> None:
    assert offensive_words()[-1] == "xấu xa quá"
    assert offensive_terms("bot này XẤU XA QUÁ") == ["xấu xa quá"]
    assert offensive_terms("áo xấu") == []  # whole phrase only
    assert offensive_terms("vcl") == ["vcl"]  # the shipped entries are still there


def test_the_extension_fixture_leaves_the_shipped_list_alone() -> None:
    assert "xấu xa quá" not in offensive_words()
    assert offensive_terms("bot này xấu xa quá") == []


# ---------------------------------------------------------------------- over HTTP


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://autotrain.test") as http:
            yield http, app


OFFENSIVE_FEEDBACK = {**WEATHER_FEEDBACK, "feedback_text": "vcl trời 35 độ mà gợi ý áo khoác, ngu như chó"}


def assert_closed_as_offensive(feedback: dict[str, Any]) -> None:
    assert feedback["status"] == "rejected", feedback
    assert feedback["flags"] == [OFFENSIVE], feedback
    assert feedback["last_error"] and "offensive" in feedback["last_error"], feedback
    assert feedback["rule_id"] is None


async def test_offensive_feedback_is_stored_flagged_and_closed(tmp_path: Path, rules_dir: Path) -> None:
    settings = make_settings(tmp_path, rules_dir, auto_generate=True)
    async with served(settings) as (http, app):
        response = await http.post("/autotrain/feedback", json=OFFENSIVE_FEEDBACK, headers=REPORTER)
        assert response.status_code == 201, response.text
        created = response.json()
        assert_closed_as_offensive(created)
        assert created["feedback_text"] == OFFENSIVE_FEEDBACK["feedback_text"]  # kept as typed

        # not dropped: it is listed and can be read back
        listed = (await http.get("/autotrain/feedback", headers=ADMIN)).json()
        assert [item["feedback_id"] for item in listed["items"]] == [created["feedback_id"]]
        rejected = (await http.get("/autotrain/feedback?status=rejected", headers=ADMIN)).json()
        assert rejected["total"] == 1
        fetched = await http.get(f"/autotrain/feedback/{created['feedback_id']}", headers=ADMIN)
        assert_closed_as_offensive(fetched.json())

        # auto-generate did not pick it up, and asking for its rule is refused
        await app.state.runtime.service.drain()
        refused = await http.post(f"/autotrain/generate/{created['feedback_id']}", headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "transition_refused"
        assert (await http.get("/autotrain/rules", headers=ADMIN)).json()["total"] == 0
        assert_closed_as_offensive(
            (await http.get(f"/autotrain/feedback/{created['feedback_id']}", headers=ADMIN)).json()
        )


async def test_offensive_words_in_the_query_count_too(tmp_path: Path, rules_dir: Path) -> None:
    async with served(make_settings(tmp_path, rules_dir)) as (http, _):
        payload = {**WEATHER_FEEDBACK, "query": "đm tìm áo khoác"}
        response = await http.post("/autotrain/feedback", json=payload, headers=REPORTER)
        assert response.status_code == 201
        assert_closed_as_offensive(response.json())


async def test_run_all_skips_offensive_feedback(tmp_path: Path, rules_dir: Path) -> None:
    async with served(make_settings(tmp_path, rules_dir, auto_generate=False)) as (http, _):
        offensive = (await http.post("/autotrain/feedback", json=OFFENSIVE_FEEDBACK, headers=REPORTER)).json()
        clean = (await http.post("/autotrain/feedback", json=HEIGHT_FEEDBACK, headers=REPORTER)).json()
        assert clean["status"] == "pending" and clean["flags"] == []

        summary = await http.post("/autotrain/run-all", headers=ADMIN)
        assert summary.status_code == 200, summary.text
        result = summary.json()
        assert result["errors"] == []
        assert len(result["rules_created"]) == 1  # the clean one only

        rules = (await http.get("/autotrain/rules", headers=ADMIN)).json()["items"]
        assert [rule["feedback_id"] for rule in rules] == [clean["feedback_id"]]
        after = (await http.get(f"/autotrain/feedback/{offensive['feedback_id']}", headers=ADMIN)).json()
        assert_closed_as_offensive(after)


async def test_clean_vietnamese_feedback_is_not_flagged(tmp_path: Path, rules_dir: Path) -> None:
    """The control for the tests above: the same path with ordinary words stays pending and gets a rule."""
    async with served(make_settings(tmp_path, rules_dir)) as (http, _):
        payload = {**WEATHER_FEEDBACK, "feedback_text": "Trời nóng mà còn gợi ý áo khoác, đi chơi mua vài lon nước"}
        response = await http.post("/autotrain/feedback", json=payload, headers=REPORTER)
        assert response.status_code == 201
        assert response.json()["status"] == "pending" and response.json()["flags"] == []
        generated = await http.post(f"/autotrain/generate/{response.json()['feedback_id']}", headers=ADMIN)
        assert generated.status_code == 200, generated.text


# ---------------------------------------------------------------------- over Slack


async def submit_offensive(slack: SlackSimulator) -> str:
    response = await slack.submit_feedback(
        query="áo khoác cho trời 35 độ", feedback_text="dm bot ngu, trời nóng mà gợi ý áo khoác", user=OTHER_USER
    )
    assert response.status_code == 200
    assert not response.content or "errors" not in response.json()  # the form is not refused
    (note,) = await slack.api.wait_for("chat.postEphemeral")
    assert note.params["user"] == OTHER_USER
    return note.params["text"]


async def test_slack_reporter_is_still_confirmed_and_no_card_is_posted(slack: SlackSimulator) -> None:
    text = await submit_offensive(slack)
    assert "FB-1001" in text
    feedback = await slack.service.get_feedback("FB-1001")
    assert feedback.status.value == "rejected" and feedback.flags == [OFFENSIVE]
    assert feedback.source == "slack" and feedback.user_id == OTHER_USER
    await slack.service.drain()
    await asyncio.sleep(0.2)  # time for a card to be posted, had a rule been made
    assert [c for c in slack.api.calls_to("chat.postMessage") if c.params.get("channel") == REVIEW_CHANNEL] == []
    assert (await slack.service.list_rules()).total == 0


async def test_slack_confirmation_does_not_promise_a_rule_for_offensive_feedback(slack: SlackSimulator) -> None:
    """The filter's policy says the client is told; the Slack note must not say a suggestion is on its way."""
    text = await submit_offensive(slack)
    assert "rule suggestion will be posted" not in text, text
