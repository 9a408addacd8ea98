"""One complaint, one card (issue 12): feedback that is the same complaint as the feedback of a rule under
review is attached to that rule when it arrives — through the REST API, with auto-generate on, the Slack app
posting cards to the fake Slack Web API — instead of getting a rule and a card of its own. A complaint that
comes back after its rule was deployed is a recurrence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from autotrain.clustering import DEFAULT_THRESHOLD
from autotrain.models import FeedbackStatus, RuleStatus
from autotrain.policy import Role
from bot.api import create_app
from tests.conftest import bearer
from tests.fakes.slack_api import FakeSlackApi
from tests.slack_support import REVIEW_CHANNEL, block_texts, ok, slack_settings

JACKET_ANSWER = "Mình gợi ý áo khoác nỉ này nhé"
MAXI_ANSWER = "Bạn thử đầm maxi này"
TONE_ANSWER = "Áo sơ mi trắng là lựa chọn an toàn vì nó hợp với nhiều kiểu quần và nhiều dịp khác nhau..."

# 12 paraphrases of 3 complaints: with and without diacritics, typos, and an exact resubmission (J1 again)
PARAPHRASES: list[tuple[str, str, str, str]] = [
    ("jacket", "Trời nóng quá mà AI còn tư vấn áo khoác", "tìm áo cho trời 35 độ", JACKET_ANSWER),
    ("maxi", "Mình thấp mà bot cứ gợi ý đầm maxi", "đầm dự tiệc", MAXI_ANSWER),
    ("jacket", "troi nong 35 do ma bot goi y ao khoac", "ao mac di choi troi nong", JACKET_ANSWER),
    ("tone", "Bot trả lời dài dòng quá", "tư vấn áo sơ mi", TONE_ANSWER),
    ("maxi", "minh dang lun ma AI goi y vay maxi dai", "dam du tiec", MAXI_ANSWER),
    ("jacket", "Nóng thế này ai mặc áo khoác nỉ", "áo đi chơi cuối tuần", JACKET_ANSWER),
    ("tone", "tra loi dai dong qua, doc met", "tu van ao so mi", TONE_ANSWER),
    ("maxi", "Người thấp mặc đầm maxi bị chìm, sao AI vẫn gợi ý", "đầm đi đám cưới", MAXI_ANSWER),
    ("jacket", "Trời nóng quá mà AI còn tư vấn áo khoác", "tìm áo cho trời 35 độ", JACKET_ANSWER),  # resubmitted
    ("tone", "Câu trả lời quá dài, nói ngắn gọn thôi", "tư vấn sơ mi công sở", TONE_ANSWER),
    ("jacket", "troi nongg qua ma AI con tu van ao khoacc", "tim ao cho troi 35 do", JACKET_ANSWER),  # typos
    ("maxi", "minh thap ma bot cu goi y dam maxiii", "dam du tiec", MAXI_ANSWER),  # typos
]
UNRELATED: list[tuple[str, str, str]] = [
    ("Giao hàng chậm quá, đặt từ tuần trước", "khi nào nhận được hàng", "Đơn của bạn đang được giao"),
    ("Mã giảm giá không áp dụng được", "mã giảm giá tháng này", "Mã SALE10 giảm 10 %"),
    ("Ảnh sản phẩm bị mờ, không xem rõ chất vải", "xem ảnh váy lụa", "Đây là ảnh váy lụa"),
]
PRAISE = ("Bot gợi ý đúng ý mình, cảm ơn nhiều", "áo đi biển", "Bạn thử áo sơ mi linen này")


def complaint(text: str, query: str, answer: str, feedback_type: str = "bug", **extra: Any) -> dict[str, Any]:
    return {"query": query, "ai_response": answer, "feedback_text": text, "feedback_type": feedback_type, **extra}


@dataclass
class Server:
    app: FastAPI
    http: httpx.AsyncClient
    slack: FakeSlackApi

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    async def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/autotrain/feedback", json=payload, headers=bearer(Role.REPORTER, "chatbot"))
        assert response.status_code == 201, response.text
        return response.json()

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.http.get(path, headers=bearer())
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post(path, json=json, headers=bearer())
        assert response.status_code == 200, response.text
        return response.json()

    async def settle(self) -> None:
        await self.runtime.service.drain()

    async def rules(self) -> list[dict[str, Any]]:
        return (await self.get("/autotrain/rules?limit=100"))["items"]

    def cards_posted(self) -> list[Any]:
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if ok(c) and c.params["channel"] == REVIEW_CHANNEL and "RUL-" in c.params.get("text", "")
        ]

    def last_card_text(self, ts: str) -> str:
        updates = [c for c in self.slack.calls_to("chat.update") if ok(c) and c.params["ts"] == ts]
        return block_texts(updates[-1].params["blocks"]) if updates else ""


@pytest.fixture
async def server(tmp_path: Path, rules_dir: Path, slack_api: FakeSlackApi) -> AsyncIterator[Server]:
    settings = slack_settings(tmp_path, rules_dir, slack_api, auto_generate=True, cluster_threshold=DEFAULT_THRESHOLD)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield Server(app, http, slack_api)


async def test_twelve_paraphrases_of_three_complaints_make_three_rules_and_three_cards(server: Server) -> None:
    submitted: list[tuple[str, dict[str, Any]]] = []
    for group, text, query, answer in PARAPHRASES:
        submitted.append((group, await server.submit(complaint(text, query, answer))))
    await server.settle()

    rules = await server.rules()
    assert len(rules) == 3, [(r["rule_id"], r["new_rule"]) for r in rules]
    rule_of_group: dict[str, set[str]] = {}
    for group, feedback in submitted:
        stored = await server.get(f"/autotrain/feedback/{feedback['feedback_id']}")
        assert stored["status"] == FeedbackStatus.PROCESSED.value
        rule_of_group.setdefault(group, set()).add(stored["rule_id"])
    assert all(len(ids) == 1 for ids in rule_of_group.values()), rule_of_group
    assert len({next(iter(ids)) for ids in rule_of_group.values()}) == 3
    sizes = {r["rule_id"]: r["cluster_size"] for r in rules}
    for group, ids in rule_of_group.items():
        assert sizes[next(iter(ids))] == sum(1 for g, *_ in PARAPHRASES if g == group)

    cards = server.cards_posted()
    assert len(cards) == 3
    for card in cards:
        rule_id = next(r["rule_id"] for r in rules if r["rule_id"] in card.params["text"])
        text = server.last_card_text(card.response["ts"])
        assert f"Same complaint from {sizes[rule_id]} feedbacks" in text, text

    for text, query, answer in UNRELATED:
        await server.submit(complaint(text, query, answer))
    praise = await server.submit(complaint(*PRAISE, feedback_type="praise"))
    assert praise["status"] == FeedbackStatus.PROCESSED.value  # at once: never pending, never attached
    await server.settle()
    assert len(await server.rules()) == 6
    assert len(server.cards_posted()) == 6
    assert (await server.get(f"/autotrain/feedback/{praise['feedback_id']}"))["rule_id"] is None
    status = await server.get("/autotrain/status")
    assert status["pending_feedback"] == 0


async def test_a_deployed_rule_s_complaint_coming_back_is_a_recurrence(server: Server) -> None:
    first = await server.submit(complaint(*PARAPHRASES[0][1:]))
    await server.settle()
    rule_id = (await server.get(f"/autotrain/feedback/{first['feedback_id']}"))["rule_id"]
    await server.post(f"/autotrain/rules/{rule_id}/approve")
    await server.post(f"/autotrain/rules/{rule_id}/deploy")

    again = [p for p in PARAPHRASES if p[0] == "jacket"][1:]  # 4 paraphrases of its complaint
    recurrences = [await server.submit(complaint(text, query, answer)) for _, text, query, answer in again]
    unrelated = await server.submit(complaint(*UNRELATED[0]))
    await server.settle()

    for feedback in recurrences:
        assert feedback["recurrence_of"] == rule_id
    assert unrelated["recurrence_of"] is None
    rule = await server.get(f"/autotrain/rules/{rule_id}")
    assert rule["status"] == RuleStatus.DEPLOYED.value
    assert rule["recurrences"] == 4
    # its effect: 4 recurrences since the deploy among the 5 feedbacks since; the unrelated one does not count
    assert rule["effect"]["since"] == {"feedback": 5, "complaints": 4, "per_1000": 800.0}
    assert rule["effect"]["before"] == {"feedback": 1, "complaints": 1, "per_1000": 1000.0}
    assert rule["effect"]["verdict"] == "too_early"
    # the first recurrence became the new rule under review; the other three were attached to it
    new_rules = [r for r in await server.rules() if r["rule_id"] != rule_id and r["status"] == "pending"]
    jacket_rules = [r for r in new_rules if r["feedback_id"] in {f["feedback_id"] for f in recurrences}]
    assert len(jacket_rules) == 1 and jacket_rules[0]["cluster_size"] == 4
    assert "recurrence_of_deployed_rule" in jacket_rules[0]["warnings"]

    card = next(c for c in server.cards_posted() if rule_id in c.params["text"])
    assert "came back 4 times since it was deployed" in server.last_card_text(card.response["ts"])
