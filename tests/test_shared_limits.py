"""With AUTOTRAIN_RATE_LIMIT_STORAGE=redis://…, the feedback limit per end user holds across instances: two
`autotrain serve` processes on one database and one Redis, an end user's feedback spread over both — the 11th
is refused (429) through either, with the same Retry-After, and another user is not affected."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import JWT_SECRET, SHIPPED_RULES, bearer
from tests.serve_process import serving, subprocess_environment
from tests.services import current_postgres, redis_url  # noqa: F401  (redis_url: the fixture)

pytestmark = pytest.mark.both_backends  # the instances share a SQLite file, or one PostgreSQL database


@pytest.fixture
def two_instances(tmp_path: Path, redis_url: str) -> Iterator[list[str]]:  # noqa: F811
    database = current_postgres[0] or f"sqlite:///{tmp_path / 'shared.db'}"
    with ExitStack() as stack:
        urls = []
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            shutil.copytree(SHIPPED_RULES, workdir / "rules", ignore=shutil.ignore_patterns(".autotrain"))
            env = subprocess_environment(
                AUTOTRAIN_DATABASE_URL=database,
                AUTOTRAIN_JWT_SECRET=JWT_SECRET,
                AUTOTRAIN_RULES_DIR=str(workdir / "rules"),
                AUTOTRAIN_RATE_LIMIT_STORAGE=redis_url,
                AUTOTRAIN_FEEDBACK_RATE_LIMIT="10/hour",
                AUTOTRAIN_AUTO_GENERATE="false",
                AUTOTRAIN_SCHEDULER="false",
                AUTOTRAIN_GIT="false",
            )
            base_url, _process = stack.enter_context(serving(workdir, env))
            urls.append(base_url)
        yield urls


def feedback(user_id: str, n: int) -> dict[str, str]:
    return {
        "query": "tìm áo cho trời 35 độ",
        "ai_response": "Mình gợi ý áo khoác nỉ",
        "feedback_text": f"Trời nóng quá, AI còn tư vấn áo khoác (lần {n})",
        "feedback_type": "bug",
        "user_id": user_id,
    }


def test_the_feedback_limit_of_one_user_holds_across_two_instances(two_instances: list[str]) -> None:
    shopper, other = f"shopper-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    headers = bearer()
    with httpx.Client(timeout=10, headers=headers) as http:
        for n in range(10):  # spread over both instances
            answer = http.post(f"{two_instances[n % 2]}/autotrain/feedback", json=feedback(shopper, n))
            assert answer.status_code == 201, answer.text
        for base_url in two_instances:  # the 11th, through either, is refused
            refused = http.post(f"{base_url}/autotrain/feedback", json=feedback(shopper, 11))
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["Retry-After"]) > 0
        assert http.post(f"{two_instances[1]}/autotrain/feedback", json=feedback(other, 1)).status_code == 201
        # nothing refused was stored: ten of the shopper's, one of the other's, seen alike by both instances
        for base_url in two_instances:
            page = http.get(f"{base_url}/autotrain/feedback", params={"limit": 50}).json()
            users = [item["user_id"] for item in page["items"]]
            assert users.count(shopper) == 10 and users.count(other) == 1
