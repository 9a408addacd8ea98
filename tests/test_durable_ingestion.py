"""Durable ingestion (issue 15): a 201 means the feedback is stored. `autotrain serve` takes feedback from a few
concurrent clients (so that several submissions may share a commit) and is SIGKILLed the moment one 201 is read,
while the other clients' submissions are still in flight; it is restarted on the same database (the SQLite file,
or the test's PostgreSQL database), round after round. In the end every acknowledged feedback is there, with its
text; a submission that got no answer may or may not be there, but none is there twice; and the status report's
feedback counts agree with the rows the list gives.

The server is the shipped command (`tests/serve_process.py`), with auto-generate, the scheduler, git history and
grouping off, so the only writes are the submissions themselves, and rate limits no submission can reach.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from autotrain.models import FeedbackStatus, FeedbackType
from autotrain.policy import Role
from tests.conftest import JWT_SECRET, SHIPPED_RULES, bearer
from tests.reliability_support import assert_served_backend, database_url
from tests.serve_process import serving, subprocess_environment

pytestmark = pytest.mark.both_backends  # a 201 is durable on SQLite (group commit) and on PostgreSQL (a commit)

CLIENTS = 5
# the n-th 201 of each round triggers its SIGKILL: the round's very first answer, or one well into the round
KILL_AFTER = (1, 12, 2, 7)
PER_CLIENT_MAX = 60  # far more than any round gets to send: every client is still submitting at the kill
TYPES = (FeedbackType.BUG, FeedbackType.SUGGESTION, FeedbackType.PRAISE)  # praise is stored processed at once
REPORTER = bearer(Role.REPORTER, "chatbot")
ADMIN = bearer(Role.ADMIN, "U_ADMIN")


@dataclass
class Ingestion:
    """What the clients were told, over every round."""

    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)  # feedback_id -> the body sent
    unanswered: list[dict[str, Any]] = field(default_factory=list)  # bodies whose request died with the server
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # feedback_text -> the body, every submission


def feedback_body(round_number: int, client: int, n: int) -> dict[str, Any]:
    tag = f"r{round_number}-c{client}-n{n}"
    return {
        "query": f"gợi ý quần jean mẫu {tag}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm mẫu {tag} không còn size",
        "feedback_type": TYPES[(client + n) % len(TYPES)].value,
        "user_id": f"end-user-{client}",
    }


async def submit_until_killed(
    base_url: str, process: subprocess.Popen[bytes], round_number: int, kill_after: int, seen: Ingestion
) -> None:
    """CLIENTS clients submit one feedback after another; the kill_after-th 201 of the round, as soon as it is
    read, SIGKILLs the server (it runs in no process group of its own: the kill is the process's)."""
    answered = 0
    killed = False

    async def client(number: int) -> None:
        nonlocal answered, killed
        async with httpx.AsyncClient(base_url=base_url, headers=REPORTER, timeout=30) as http:
            for n in range(PER_CLIENT_MAX):
                if killed:
                    return
                body = feedback_body(round_number, number, n)
                seen.sent[body["feedback_text"]] = body
                try:
                    response = await http.post("/autotrain/feedback", json=body)
                except httpx.TransportError as exc:
                    assert killed, f"a submission failed while the server was up: {exc!r}"
                    seen.unanswered.append(body)
                    return
                assert response.status_code == 201, response.text
                stored = response.json()
                assert stored["feedback_text"] == body["feedback_text"], stored
                assert stored["feedback_id"] not in seen.acknowledged, f"one id acknowledged twice: {stored}"
                seen.acknowledged[stored["feedback_id"]] = body
                answered += 1
                if answered == kill_after and not killed:
                    process.kill()  # SIGKILL, right after this 201; the other clients are waiting for theirs
                    killed = True

    async with asyncio.TaskGroup() as clients:
        for number in range(CLIENTS):
            clients.create_task(client(number))
    assert killed, f"round {round_number}: the server was never killed ({answered} answers)"


def all_feedback(http: httpx.Client) -> list[dict[str, Any]]:
    """Every feedback the list reports, page by page (offset pages: the database is quiet)."""
    items: list[dict[str, Any]] = []
    while True:
        response = http.get("/autotrain/feedback", params={"limit": 200, "offset": len(items)})
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if not page["items"] or len(items) >= page["total"]:
            assert len(items) == page["total"], f"the list gave {len(items)} items but a total of {page['total']}"
            return items


def check_after_restart(http: httpx.Client, seen: Ingestion, label: str) -> None:
    listed = all_feedback(http)
    ids = Counter(item["feedback_id"] for item in listed)
    assert not [i for i, n in ids.items() if n > 1], f"{label}: an id listed twice"
    texts = Counter(item["feedback_text"] for item in listed)
    twice = [text for text, n in texts.items() if n > 1]
    assert not twice, f"{label}: submissions stored more than once: {twice}"
    assert set(texts) <= set(seen.sent), f"{label}: feedback nobody sent: {set(texts) - set(seen.sent)}"

    by_id = {item["feedback_id"]: item for item in listed}
    lost = sorted(set(seen.acknowledged) - set(by_id))
    assert not lost, f"{label}: acknowledged (201) but not listed after the restart: {lost}"
    for feedback_id, body in seen.acknowledged.items():
        response = http.get(f"/autotrain/feedback/{feedback_id}")
        assert response.status_code == 200, f"{label}: {feedback_id} acknowledged, now {response.text}"
        stored = response.json()
        for key in ("query", "feedback_text", "feedback_type", "user_id"):
            assert stored[key] == body[key], f"{label}: {feedback_id}'s {key} is {stored[key]!r}, sent {body[key]!r}"
        assert by_id[feedback_id]["feedback_text"] == body["feedback_text"], label

    # the status report's counts are the rows', after every crash
    report = http.get("/autotrain/status")
    assert report.status_code == 200, report.text
    status = report.json()
    listed_by_status = Counter(item["status"] for item in listed)
    listed_by_type = Counter(item["feedback_type"] for item in listed)
    assert status["feedback_by_status"] == {s.value: listed_by_status[s.value] for s in FeedbackStatus}, label
    assert status["feedback_by_type"] == {t.value: listed_by_type[t.value] for t in FeedbackType}, label
    assert status["pending_feedback"] == listed_by_status[FeedbackStatus.PENDING.value], label
    for feedback_status in FeedbackStatus:  # and the filtered lists' totals say the same
        page = http.get("/autotrain/feedback", params={"status": feedback_status.value, "limit": 1}).json()
        assert page["total"] == listed_by_status[feedback_status.value], f"{label}: {feedback_status.value}"


def test_every_acknowledged_feedback_survives_sigkill_after_its_201(tmp_path: Path) -> None:
    workdir = tmp_path / "served"
    shutil.copytree(SHIPPED_RULES, workdir / "config", ignore=shutil.ignore_patterns(".autotrain"))
    env = subprocess_environment(
        AUTOTRAIN_DATABASE_URL=database_url(tmp_path),  # the same database for every start
        AUTOTRAIN_JWT_SECRET=JWT_SECRET,
        AUTOTRAIN_AUTO_GENERATE="false",
        AUTOTRAIN_SCHEDULER="false",
        AUTOTRAIN_GIT="false",
        AUTOTRAIN_CLUSTER_THRESHOLD="",
        AUTOTRAIN_FEEDBACK_RATE_LIMIT="100000/minute",
        AUTOTRAIN_TOKEN_RATE_LIMIT="100000/minute",
    )
    seen = Ingestion()
    for round_number, kill_after in enumerate(KILL_AFTER, start=1):
        with serving(workdir, env) as (base_url, process):
            if round_number > 1:  # what the previous kills left, as this start finds it
                with httpx.Client(base_url=base_url, headers=ADMIN, timeout=30) as http:
                    check_after_restart(http, seen, f"start {round_number}")
            asyncio.run(submit_until_killed(base_url, process, round_number, kill_after, seen))
            process.wait(timeout=10)
        assert_served_backend((workdir / "serve.log").read_text(errors="replace"))
        (workdir / "serve.log").rename(workdir / f"serve-{round_number}.log")

    with serving(workdir, env) as (base_url, _), httpx.Client(base_url=base_url, headers=ADMIN, timeout=30) as http:
        check_after_restart(http, seen, "after the last kill")
    assert len(seen.acknowledged) >= sum(KILL_AFTER)
    # the kills landed while submissions were in flight (else this test would only test clean stops)
    assert seen.unanswered, "no submission was in flight at any of the kills"
