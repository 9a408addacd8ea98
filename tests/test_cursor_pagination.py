"""Keyset (cursor) pagination of the lists: GET /autotrain/feedback, /autotrain/rules and /autotrain/deployments.

The contract: each list takes `cursor` (opaque) and `limit`, and answers
`{"items", "total", "limit", "offset", "next_cursor"}`, `next_cursor` null on the last page; passing `next_cursor`
back as `cursor` gives the next page. Newest first (id descending) by default; `order=oldest` for feedback and
rules. Filters combine with the cursor. `offset` still works, up to 10,000; a cursor with a non-zero offset, an
offset above 10,000 and a malformed cursor are 422 `invalid_input`, never 500.

Every call goes through the real ASGI app over HTTP and a real SQLite file (the `client` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections import Counter
from typing import Any

import httpx
import pytest

Headers = dict[str, str]

PAGE_KEYS = {"items", "total", "limit", "offset", "next_cursor"}
TYPES = ("bug", "suggestion", "praise")  # praise is stored processed at once; the others pending
ID_KEY = {
    "/autotrain/feedback": "feedback_id",
    "/autotrain/rules": "rule_id",
    "/autotrain/deployments": "deployment_id",
}
LISTS = tuple(ID_KEY)
MAX_OFFSET = 10_000


# ---------------------------------------------------------------------- helpers


def feedback_body(tag: str, feedback_type: str = "bug") -> dict[str, Any]:
    return {
        "query": f"gợi ý quần jean mẫu {tag}",
        "ai_response": "Bạn thử mẫu này nhé",
        "feedback_text": f"Sản phẩm mẫu {tag} không còn size",
        "feedback_type": feedback_type,
    }


def number(item_id: str | int) -> int:
    """The id's order: FB-1042 -> 1042, RUL-1003 -> 1003, a deployment's 7 -> 7."""
    return item_id if isinstance(item_id, int) else int(str(item_id).rsplit("-", 1)[1])


async def submit(client: httpx.AsyncClient, headers: Headers, body: dict[str, Any]) -> str:
    response = await client.post("/autotrain/feedback", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["feedback_id"]


async def submit_many(client: httpx.AsyncClient, headers: Headers, count: int) -> dict[str, dict[str, Any]]:
    """`count` feedbacks, the types in turn; {feedback_id: the stored feedback}."""
    stored = {}
    for n in range(count):
        response = await client.post(
            "/autotrain/feedback", json=feedback_body(f"old-{n}", TYPES[n % len(TYPES)]), headers=headers
        )
        assert response.status_code == 201, response.text
        stored[response.json()["feedback_id"]] = response.json()
    return stored


async def get_page(client: httpx.AsyncClient, headers: Headers, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, f"{path} {params}: {response.status_code} {response.text}"
    page = response.json()
    assert set(page) == PAGE_KEYS, f"{path} {params}: {sorted(page)}"
    assert page["next_cursor"] is None or (isinstance(page["next_cursor"], str) and page["next_cursor"]), page
    return page


async def cursor_pages(
    client: httpx.AsyncClient, headers: Headers, path: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every page from the first to the one whose next_cursor is null."""
    pages = [await get_page(client, headers, path, limit=limit, **params)]
    while pages[-1]["next_cursor"] is not None:
        assert len(pages) < 500, f"{path} {params}: paging does not end"
        pages.append(await get_page(client, headers, path, limit=limit, cursor=pages[-1]["next_cursor"], **params))
    return pages


def ids_of(page: dict[str, Any], path: str) -> list[Any]:
    return [item[ID_KEY[path]] for item in page["items"]]


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    """The error shape {"error": {"code", "message"}}, with a message naming each of `words`."""
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    for word in words:
        assert word in message.lower(), f"the message does not say what is wrong ({word}): {message!r}"


def assert_cursor_pages_equal_offset_pages(
    cursor_paged: list[dict[str, Any]], offset_paged: list[dict[str, Any]], expected: list[Any], path: str, label: str
) -> None:
    limit = cursor_paged[0]["limit"]
    assert [ids_of(page, path) for page in cursor_paged] == [ids_of(page, path) for page in offset_paged], label
    assert [i for page in cursor_paged for i in ids_of(page, path)] == expected, label
    assert len(cursor_paged) == max(1, math.ceil(len(expected) / limit)), f"{label}: an empty page at the end?"
    assert all(page["next_cursor"] is not None for page in cursor_paged[:-1]), label
    assert cursor_paged[-1]["next_cursor"] is None, f"{label}: the last page must have next_cursor null"
    for page in cursor_paged + offset_paged:
        assert (page["total"], page["limit"]) == (len(expected), limit), f"{label}: {page['total']}, {page['limit']}"
    assert all(page["offset"] == 0 for page in cursor_paged), label
    assert [page["offset"] for page in offset_paged] == [k * limit for k in range(len(offset_paged))], label


async def offset_pages(
    client: httpx.AsyncClient, headers: Headers, path: str, limit: int, count: int, **params: Any
) -> list[dict[str, Any]]:
    return [await get_page(client, headers, path, limit=limit, offset=k * limit, **params) for k in range(count)]


# ---------------------------------------------------------------------- (a) paging while feedback arrives

EXISTING = 70
PAGE = 7
WRITERS = 3
NEW_PER_PAGE = 3  # the writers may start this many submissions more for every page read...
MAX_NEW = 30  # ...and this many in all, so that paging oldest first comes to an end


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_cursor_paging_while_feedback_keeps_arriving_sees_each_feedback_once(
    client: httpx.AsyncClient, admin_headers: Headers, reporter_headers: Headers, order: str
) -> None:
    existing = await submit_many(client, reporter_headers, EXISTING)
    order_params = {"order": "oldest"} if order == "oldest" else {}
    arrived: dict[str, tuple[str, int]] = {}  # feedback_id -> (its text, pages read when its 201 came)
    pages: list[dict[str, Any]] = []
    progress = asyncio.Condition()
    started = 0
    done = False

    def may_go_on() -> bool:  # stop, or start one more submission
        return done or started < min(MAX_NEW, NEW_PER_PAGE * (len(pages) + 1))

    async def writer() -> None:
        nonlocal started
        while True:
            async with progress:
                await progress.wait_for(may_go_on)
                if done:
                    return
                started += 1
                n = started
            body = feedback_body(f"new-{n}", TYPES[n % len(TYPES)])
            feedback_id = await submit(client, reporter_headers, body)
            arrived[feedback_id] = (body["feedback_text"], len(pages))

    writers = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    try:
        cursor = None
        while True:
            params = {"limit": PAGE, **order_params} | ({"cursor": cursor} if cursor else {})
            page = await get_page(client, admin_headers, "/autotrain/feedback", **params)
            pages.append(page)
            async with progress:
                progress.notify_all()
            if len(pages) <= 3:  # a submission commits (durably) slower than a page reads: let some land mid-way
                before = len(arrived)
                for _ in range(500):
                    if len(arrived) > before:
                        break
                    await asyncio.sleep(0.01)
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 40, "paging does not end"
    finally:
        async with progress:
            done = True
            progress.notify_all()
        await asyncio.gather(*writers)

    seen = [item["feedback_id"] for page in pages for item in page["items"]]
    twice = [i for i, n in Counter(seen).items() if n > 1]
    assert not twice, f"seen on more than one page: {twice}"
    missed = sorted(set(existing) - set(seen), key=number)
    assert not missed, f"existed when paging began, never seen: {missed}"
    assert set(seen) <= set(existing) | set(arrived), "an id nobody submitted"
    numbers = [number(i) for i in seen]
    expected_order = sorted(numbers, reverse=order == "newest")
    assert numbers == expected_order and len(set(numbers)) == len(numbers), f"not strictly {order} first: {seen}"
    texts = {i: stored["feedback_text"] for i, stored in existing.items()} | {i: t for i, (t, _) in arrived.items()}
    for page in pages:
        assert (page["limit"], page["offset"]) == (PAGE, 0), page
        assert page["total"] >= EXISTING, page["total"]
        for item in page["items"]:
            assert item["feedback_text"] == texts[item["feedback_id"]], item
    assert all(len(page["items"]) == PAGE for page in pages[:-1]), [len(page["items"]) for page in pages]

    # the test's own premise: feedback really arrived while the pages were read, not only before or after
    assert len({at for _, at in arrived.values()}) >= 3, sorted(at for _, at in arrived.values())


# ---------------------------------------------------------------------- (b) cursor pages = offset pages


FEEDBACK_FILTERS: list[dict[str, str]] = [
    {},
    {"order": "oldest"},
    {"status": "pending"},
    {"status": "processed", "order": "oldest"},
    {"feedback_type": "praise"},
    {"feedback_type": "bug", "order": "oldest"},
    {"status": "pending", "feedback_type": "suggestion"},
    {"status": "rejected"},  # none
]


async def test_feedback_cursor_pages_equal_offset_pages_on_a_quiet_database(
    client: httpx.AsyncClient, admin_headers: Headers, reporter_headers: Headers
) -> None:
    stored = await submit_many(client, reporter_headers, 80)  # 27 bug, 27 suggestion (pending), 26 praise
    limit = 9
    for filters in FEEDBACK_FILTERS:
        label = f"feedback {filters}"
        matching = [
            i
            for i, feedback in stored.items()
            if all(feedback[key] == value for key, value in filters.items() if key != "order")
        ]
        expected = sorted(matching, key=number, reverse=filters.get("order") != "oldest")
        paged = await cursor_pages(client, admin_headers, "/autotrain/feedback", limit, **filters)
        by_offset = await offset_pages(client, admin_headers, "/autotrain/feedback", limit, len(paged), **filters)
        assert_cursor_pages_equal_offset_pages(paged, by_offset, expected, "/autotrain/feedback", label)
    # newest first is the default of the offset pages too
    first = await get_page(client, admin_headers, "/autotrain/feedback", limit=1)
    assert ids_of(first, "/autotrain/feedback") == [max(stored, key=number)]


async def make_rules_and_deployments(
    client: httpx.AsyncClient, admin_headers: Headers
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Rules in three files and five states, and deployments (deploys and rollbacks):
    ({rule_id: {"status", "module_name"}}, the deployment ids)."""
    rules: dict[str, dict[str, Any]] = {}
    texts = (
        "Sản phẩm mẫu {n} không còn size",  # fashion_rules.json
        "Bot trả lời giọng thô lỗ lần {n}",  # prompt_v2.txt
        "Phối đồ màu lạ lần {n}",  # stylist_guidelines.md
    )
    for n in range(18):
        body = feedback_body(f"rule-{n}") | {"feedback_text": texts[n % 3].format(n=n)}
        feedback_id = await submit(client, admin_headers, body)
        response = await client.post(f"/autotrain/generate/{feedback_id}", headers=admin_headers)
        assert response.status_code == 200, response.text
        rule = response.json()
        rules[rule["rule_id"]] = {"status": rule["status"], "module_name": rule["module_name"]}
    assert len({rule["module_name"] for rule in rules.values()}) >= 2, rules
    deployments: list[int] = []
    for k, rule_id in enumerate(sorted(rules, key=number)[:12]):
        action = "reject" if k % 4 == 3 else "approve"
        response = await client.post(f"/autotrain/rules/{rule_id}/{action}", headers=admin_headers)
        assert response.status_code == 200, response.text
        rules[rule_id]["status"] = response.json()["status"]
        if action == "approve" and k % 4 != 2:
            response = await client.post(f"/autotrain/rules/{rule_id}/deploy", headers=admin_headers)
            assert response.status_code == 200, response.text
            rules[rule_id]["status"] = response.json()["status"]
            deployments.append(response.json()["deployment"]["deployment_id"])
            if k % 4 == 1:
                response = await client.post(f"/autotrain/rules/{rule_id}/rollback", headers=admin_headers)
                assert response.status_code == 200, response.text
                rules[rule_id]["status"] = response.json()["status"]
                deployments.append(response.json()["deployment"]["deployment_id"])
    assert {rule["status"] for rule in rules.values()} == {"pending", "approved", "rejected", "deployed", "rolled_back"}
    return rules, deployments


async def test_rule_and_deployment_cursor_pages_equal_offset_pages(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    rules, deployments = await make_rules_and_deployments(client, admin_headers)
    modules = Counter(rule["module_name"] for rule in rules.values())
    module = modules.most_common(1)[0][0]
    rule_filters: list[dict[str, str]] = [
        {},
        {"order": "oldest"},
        {"status": "pending"},
        {"status": "deployed", "order": "oldest"},
        {"module_name": module},
        {"status": "pending", "module_name": module, "order": "oldest"},
    ]
    limit = 4
    for filters in rule_filters:
        label = f"rules {filters}"
        matching = [
            i
            for i, rule in rules.items()
            if all(rule[key] == value for key, value in filters.items() if key != "order")
        ]
        expected = sorted(matching, key=number, reverse=filters.get("order") != "oldest")
        paged = await cursor_pages(client, admin_headers, "/autotrain/rules", limit, **filters)
        by_offset = await offset_pages(client, admin_headers, "/autotrain/rules", limit, len(paged), **filters)
        assert_cursor_pages_equal_offset_pages(paged, by_offset, expected, "/autotrain/rules", label)

    expected = sorted(deployments, reverse=True)  # newest first
    assert len(expected) >= 6
    paged = await cursor_pages(client, admin_headers, "/autotrain/deployments", 2)
    by_offset = await offset_pages(client, admin_headers, "/autotrain/deployments", 2, len(paged))
    assert_cursor_pages_equal_offset_pages(paged, by_offset, expected, "/autotrain/deployments", "deployments")


# ---------------------------------------------------------------------- (c) bad input: 422, never 500


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


MALFORMED_CURSORS = [
    "zzz",
    "not a cursor",
    "%%%",
    "9" * 40,
    "x" * 4000,
    b64(b"\xff\xfe\xfd junk \x00"),
    b64(b'{"id": "FB-not-a-number"}'),
    b64(b"[]"),
    b64(b"null"),
    base64.b64encode(b"junk" * 10).decode(),
]


async def some_items(client: httpx.AsyncClient, admin_headers: Headers, path: str) -> None:
    """At least three items in the list at `path`."""
    if path == "/autotrain/feedback":
        await submit_many(client, admin_headers, 3)
        return
    for n in range(3):
        feedback_id = await submit(client, admin_headers, feedback_body(f"bad-input-{n}"))
        rule = await client.post(f"/autotrain/generate/{feedback_id}", headers=admin_headers)
        assert rule.status_code == 200, rule.text
        if path == "/autotrain/deployments":
            rule_id = rule.json()["rule_id"]
            for action in ("approve", "deploy"):
                response = await client.post(f"/autotrain/rules/{rule_id}/{action}", headers=admin_headers)
                assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", LISTS)
async def test_bad_cursor_and_offset_are_422_never_500(
    client: httpx.AsyncClient, admin_headers: Headers, path: str
) -> None:
    await some_items(client, admin_headers, path)
    first = await get_page(client, admin_headers, path, limit=2)
    cursor = first["next_cursor"]
    assert cursor is not None, first

    # offset keeps working, up to 10,000
    assert (await get_page(client, admin_headers, path, limit=2, offset=1))["offset"] == 1
    far = await get_page(client, admin_headers, path, limit=2, offset=MAX_OFFSET)
    assert (far["items"], far["offset"], far["next_cursor"]) == ([], MAX_OFFSET, None)
    for offset in (MAX_OFFSET + 1, 1_000_000):
        response = await client.get(path, params={"offset": offset}, headers=admin_headers)
        assert_error(response, 422, "invalid_input", "offset")

    # a cursor with a non-zero offset: refused; with offset=0, the cursor's page
    for offset in (1, 2, MAX_OFFSET):
        response = await client.get(
            path, params={"cursor": cursor, "offset": offset, "limit": 2}, headers=admin_headers
        )
        assert_error(response, 422, "invalid_input", "cursor", "offset")
    with_zero = await get_page(client, admin_headers, path, limit=2, cursor=cursor, offset=0)
    assert with_zero == await get_page(client, admin_headers, path, limit=2, cursor=cursor)
    assert ids_of(with_zero, path) and set(ids_of(with_zero, path)).isdisjoint(ids_of(first, path))

    for malformed in MALFORMED_CURSORS:
        response = await client.get(path, params={"cursor": malformed, "limit": 2}, headers=admin_headers)
        assert_error(response, 422, "invalid_input", "cursor")
    # and nothing was left broken
    assert await get_page(client, admin_headers, path, limit=2) == first
