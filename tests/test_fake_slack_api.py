"""The fake Slack Web API, driven by the real slack_sdk clients (async and sync)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes import slack_api as fake_slack_api
from tests.fakes.slack_api import FakeSlackApi

slack_api = fake_slack_api.slack_api  # the fixture (tests/conftest.py may re-export it too)
TOKEN = "xoxb-test"


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(text: str = "Approve", action_id: str = "approve", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id, **extra}


def modal(title: str = "Review rule", **extra: Any) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": [section("Hi")], **extra}


@pytest.fixture
def fake() -> Iterator[FakeSlackApi]:
    """A fake without the violation check at teardown, for tests that break the limits on purpose."""
    with FakeSlackApi() as server:
        yield server


@pytest.fixture
async def client(slack_api: FakeSlackApi) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=TOKEN, base_url=slack_api.base_url)


def async_client(fake: FakeSlackApi, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.base_url, **kwargs)


def sync_client(fake: FakeSlackApi) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.base_url)


# ---------------------------------------------------------------------- recording and answers


async def test_post_message_is_recorded_with_exact_params(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    blocks = [section("*Rule proposed*", block_id="summary"), {"type": "actions", "elements": [button()]}]

    response = await client.chat_postMessage(channel="C123", text="Rule proposed", blocks=blocks, thread_ts="1.2")

    [call] = slack_api.calls_to("chat.postMessage")
    assert call.params == {"channel": "C123", "text": "Rule proposed", "blocks": blocks, "thread_ts": "1.2"}
    assert call.token == TOKEN
    assert call.status == 200
    assert response["channel"] == "C123"
    assert response["ts"] == "1700000000.000100"
    assert response["message"]["text"] == "Rule proposed"
    assert response["message"]["blocks"] == blocks
    assert slack_api.violations == []


async def test_ts_increase_and_update_of_a_posted_message_succeeds(
    slack_api: FakeSlackApi,
    client: AsyncWebClient,
) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=f"m{i}"))["ts"] for i in range(3)]

    assert stamps == ["1700000000.000100", "1700000000.000200", "1700000000.000300"]
    assert sorted(stamps, key=float) == stamps
    updated = await client.chat_update(channel="C1", ts=stamps[1], text="edited")
    assert updated.data == {"ok": True, "channel": "C1", "ts": stamps[1], "text": "edited"}
    assert [call.params["text"] for call in slack_api.calls] == ["m0", "m1", "m2", "edited"]


async def test_chat_update_of_an_unknown_ts_fails(fake: FakeSlackApi) -> None:
    client = async_client(fake)
    posted = await client.chat_postMessage(channel="C1", text="hi")

    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel="C1", ts="1600000000.000100", text="edited")
    assert raised.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel="C_OTHER", ts=posted["ts"], text="edited")
    assert raised.value.response["error"] == "message_not_found"
    assert len(fake.violations) == 2
    assert "1600000000.000100" in fake.violations[0]
    assert "never posted" in fake.violations[0]


async def test_register_message_lets_chat_update_target_it(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    ts = slack_api.register_message("C9", "1690000000.000100")

    response = await client.chat_update(channel="C9", ts=ts, text="now approved")

    assert response["ts"] == "1690000000.000100"


async def test_other_methods_answer_like_slack(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    slack_api.set_replies("C1", "1.000100", [{"ts": "1.000100", "text": "thread start"}])
    slack_api.set_usergroup_members("S_REVIEWERS", ["U1", "U2"])

    auth = await client.auth_test()
    link = await client.chat_getPermalink(channel="C1", message_ts="1700000000.000100")
    replies = await client.conversations_replies(channel="C1", ts="1.000100")
    empty = await client.conversations_replies(channel="C1", ts="9.9")
    dm = await client.conversations_open(users="U42")
    members = await client.usergroups_users_list(usergroup="S_REVIEWERS")
    ephemeral = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")

    assert auth["user_id"] == "UBOT" and auth["bot_id"] == "BBOT" and auth["team_id"] == "T0001"
    assert link["permalink"] == "https://fake.slack.com/archives/C1/p1700000000000100"
    assert replies["messages"] == [{"ts": "1.000100", "text": "thread start"}]
    assert empty["messages"] == []
    assert dm["channel"] == {"id": "DU42"}
    assert members["users"] == ["U1", "U2"]
    assert ephemeral["message_ts"] == "1700000000.000100"
    # GET methods send their params in the query string; they are recorded all the same
    assert slack_api.calls_to("conversations.replies")[0].params == {"channel": "C1", "ts": "1.000100"}


async def test_unknown_method_and_missing_token(fake: FakeSlackApi) -> None:
    with pytest.raises(SlackApiError) as raised:
        await async_client(fake).api_call("reactions.add", json={"name": "eyes"})
    assert raised.value.response["error"] == "unknown_method"
    assert fake.violations == []

    with pytest.raises(SlackApiError) as raised:
        await AsyncWebClient(base_url=fake.base_url).chat_postMessage(channel="C1", text="hi")
    assert raised.value.response["error"] == "not_authed"
    assert fake.calls[-1].token is None
    assert fake.violations == ["chat.postMessage: no token (Authorization: Bearer ... header or `token` param)"]


def test_form_encoded_bodies_with_json_blocks_are_decoded(slack_api: FakeSlackApi) -> None:
    blocks = [section("from a form"), {"type": "divider"}]
    client = sync_client(slack_api)

    # urlencoded body
    client.api_call("chat.postMessage", params={"channel": "C1", "text": "t", "blocks": json.dumps(blocks)})
    # multipart body
    client.api_call("chat.postMessage", data={"channel": "C2", "text": "t", "blocks": json.dumps(blocks)})
    # token as a form param instead of the header
    httpx.post(f"{slack_api.base_url}chat.postMessage", data={"token": "xoxb-form", "channel": "C3", "text": "t"})

    calls = slack_api.calls_to("chat.postMessage")
    assert calls[0].params == {"channel": "C1", "text": "t", "blocks": blocks}
    assert calls[1].params == {"channel": "C2", "text": "t", "blocks": blocks}
    assert calls[2].params == {"channel": "C3", "text": "t"}
    assert calls[2].token == "xoxb-form"
    assert [call.status for call in calls] == [200, 200, 200]


async def test_response_url_posts_are_recorded(fake: FakeSlackApi) -> None:
    url = fake.response_url("approve")
    assert url == f"{fake.url}/response/approve"

    ok = await AsyncWebhookClient(url).send(text="Approved", replace_original=True)
    too_many = await AsyncWebhookClient(url).send(text="x", blocks=[section(str(i)) for i in range(51)])

    assert (ok.status_code, ok.body) == (200, "ok")
    [first, second] = fake.calls_to("response_url:approve")
    assert first.params == {"text": "Approved", "replace_original": True}
    assert first.token is None
    assert (too_many.status_code, too_many.body) == (400, "invalid_blocks")
    assert second.status == 400
    assert fake.violations == ["response_url:approve: blocks has 51 items (Slack's max is 50)"]


# ---------------------------------------------------------------------- Slack's limits


async def test_51_blocks_is_a_violation(fake: FakeSlackApi) -> None:
    client = async_client(fake)
    await client.chat_postMessage(channel="C1", text="fifty", blocks=[section(str(i)) for i in range(50)])
    assert fake.violations == []

    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="C1", text="too many", blocks=[section(str(i)) for i in range(51)])

    assert raised.value.response["error"] == "invalid_blocks"
    assert fake.violations == ["chat.postMessage: blocks has 51 items (Slack's max is 50)"]
    assert len(fake.calls_to("chat.postMessage")) == 2


def test_section_text_of_3001_chars_is_a_violation(fake: FakeSlackApi) -> None:
    client = sync_client(fake)
    client.chat_postMessage(channel="C1", text="ok", blocks=[section("x" * 3000)])
    assert fake.violations == []

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C1", text="long", blocks=[section("ok"), section("x" * 3001)])

    assert raised.value.response["error"] == "invalid_blocks"
    assert fake.violations == ["chat.postMessage: blocks[1].text.text is 3001 chars (Slack's max is 3000)"]


def test_message_text_over_40000_chars_is_msg_too_long(fake: FakeSlackApi) -> None:
    with pytest.raises(SlackApiError) as raised:
        sync_client(fake).chat_postMessage(channel="C1", text="x" * 40_001)

    assert raised.value.response["error"] == "msg_too_long"
    assert fake.violations == ["chat.postMessage: text is 40001 chars (Slack's max is 40000)"]


BAD_BLOCKS: list[tuple[dict[str, Any], str]] = [
    ({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}, "blocks[0].text.text is 151 chars"),
    ({"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}, "blocks[0].text.type must be 'plain_text'"),
    ({"type": "section", "text": {"type": "markdown", "text": "x"}}, "a text object must be 'plain_text' or"),
    ({"type": "section", "text": {"type": "mrkdwn", "text": 5}}, "blocks[0].text.text must be a string"),
    ({"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}, "blocks[0].fields has 11 items"),
    ({"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}, "fields[0].text is 2001 chars"),
    ({"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}, "blocks[0].elements has 11 items"),
    ({"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}, "elements has 26 items"),
    ({"type": "actions", "elements": [button(action_id="same"), button(action_id="same")]}, "'same' is not unique"),
    (section("s", block_id="b" * 256), "blocks[0].block_id is 256 chars"),
    (section("s", accessory=button(text="t" * 76)), "blocks[0].accessory.text.text is 76 chars"),
    (section("s", accessory=button(value="v" * 2001)), "accessory.value is 2001 chars"),
    (section("s", accessory=button(action_id="a" * 256)), "accessory.action_id is 256 chars"),
    (section("s", accessory=button(url="https://x/" + "u" * 2991)), "accessory.url is 3001 chars"),
    (section("s", accessory=button(style="green")), "accessory.style is 'green'"),
    (
        section(
            "s",
            accessory=button(
                confirm={
                    "title": {"type": "plain_text", "text": "t" * 101},
                    "text": {"type": "mrkdwn", "text": "x" * 301},
                    "confirm": {"type": "plain_text", "text": "c" * 31},
                    "deny": {"type": "plain_text", "text": "d" * 31},
                }
            ),
        ),
        "accessory.confirm.title.text is 101 chars",
    ),
    (
        section("s", accessory={"type": "static_select", "action_id": "pick", "options": [{"x": 1}] * 101}),
        "accessory.options has 101 items (Slack's max is 100)",
    ),
    (
        section(
            "s",
            accessory={
                "type": "static_select",
                "options": [{"text": {"type": "plain_text", "text": "o" * 76}, "value": "v" * 151}],
            },
        ),
        "accessory.options[0].text.text is 76 chars",
    ),
    (
        {
            "type": "input",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "max_length": 3001},
        },
        "blocks[0].element.max_length is 3001",
    ),
    (
        {
            "type": "input",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "max_length": 10, "initial_value": "x" * 11},
        },
        "blocks[0].element.initial_value is 11 chars (max_length is 10)",
    ),
    (
        {
            "type": "input",
            "label": {"type": "plain_text", "text": "l" * 2001},
            "element": {"type": "plain_text_input"},
        },
        "blocks[0].label.text is 2001 chars",
    ),
    ({"type": "carousel"}, "blocks[0].type is an unknown block type 'carousel'"),
    ({"type": "actions", "elements": [{"type": "slider", "action_id": "s"}]}, "unknown element type 'slider'"),
]


@pytest.mark.parametrize(("block", "expected"), BAD_BLOCKS, ids=[expected for _, expected in BAD_BLOCKS])
def test_block_limits_are_checked_through_nesting(fake: FakeSlackApi, block: dict[str, Any], expected: str) -> None:
    with pytest.raises(SlackApiError) as raised:
        sync_client(fake).chat_postMessage(channel="C1", text="t", blocks=[block])

    assert raised.value.response["error"] == "invalid_blocks"
    assert any(expected in violation for violation in fake.violations), fake.violations
    assert all(violation.startswith("chat.postMessage: blocks[0]") for violation in fake.violations)


def test_duplicate_block_ids_in_one_message_are_a_violation(fake: FakeSlackApi) -> None:
    blocks = [section("a", block_id="rule"), section("b", block_id="rule")]

    with pytest.raises(SlackApiError):
        sync_client(fake).chat_postMessage(channel="C1", text="t", blocks=blocks)

    assert fake.violations == ["chat.postMessage: blocks[1].block_id 'rule' is not unique within the message"]


def test_a_rich_valid_message_has_no_violation(slack_api: FakeSlackApi) -> None:
    """Guards against false positives: every checked kind of block, at its limits."""
    option = {"text": {"type": "plain_text", "text": "o" * 75}, "value": "v" * 150}
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        section("x" * 3000, block_id="b" * 255, accessory=button(text="t" * 75, action_id="a" * 255, value="v" * 2000)),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}] * 10},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "image", "image_url": "https://x/i.png", "alt_text": "i"}] * 10},
        # the same action_id in different blocks is fine: Slack wants it unique within its block
        {"type": "actions", "elements": [button(action_id=f"b{i}") for i in range(24)] + [button()]},
        {"type": "actions", "elements": [{"type": "static_select", "action_id": "pick", "options": [option] * 100}]},
        section("s", accessory={"type": "overflow", "options": [option] * 5}),
        {"type": "rich_text", "elements": []},
    ]

    response = sync_client(slack_api).chat_postMessage(channel="C1", text="x" * 40_000, blocks=blocks)

    assert response["ok"] is True
    assert slack_api.violations == []


def test_required_message_params_are_checked(fake: FakeSlackApi) -> None:
    client = sync_client(fake)
    errors = []
    for call in (
        lambda: client.chat_postMessage(channel="", text="no channel"),
        lambda: client.chat_postEphemeral(channel="C1", user="", text="no user"),
        lambda: client.api_call("chat.postMessage", json={"channel": "C1"}),
    ):
        with pytest.raises(SlackApiError) as raised:
            call()
        errors.append(raised.value.response["error"])

    assert errors == ["invalid_arguments", "invalid_arguments", "no_text"]
    assert fake.violations == [
        "chat.postMessage: `channel` is required",
        "chat.postEphemeral: `user` is required",
        "chat.postMessage: text is missing: a message needs text, blocks or attachments",
    ]


# ---------------------------------------------------------------------- views and trigger ids


async def test_views_open_push_update_publish(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    opened = await client.views_open(trigger_id=slack_api.new_trigger_id(), view=modal(external_id="review-1"))
    pushed = await client.views_push(trigger_id=slack_api.new_trigger_id(), view=modal("Step 2"))
    by_id = await client.views_update(view_id=opened["view"]["id"], view=modal("Updated"))
    by_external_id = await client.views_update(external_id="review-1", view=modal("Again"))
    home = await client.views_publish(user_id="U1", view={"type": "home", "blocks": [section("home")]})

    assert opened["view"]["id"].startswith("V") and opened["view"]["hash"].startswith("h")
    assert opened["view"]["title"] == {"type": "plain_text", "text": "Review rule"}
    assert pushed["view"]["id"] != opened["view"]["id"]
    assert by_id["view"]["id"] == opened["view"]["id"]
    assert by_external_id["view"]["id"] == opened["view"]["id"]
    assert home["view"]["type"] == "home"
    assert slack_api.calls_to("views.open")[0].params["view"] == modal(external_id="review-1")


async def test_views_open_with_an_expired_trigger_id_fails(fake: FakeSlackApi) -> None:
    client = async_client(fake)
    stale = fake.new_trigger_id()
    fake.expire_triggers()
    fresh = fake.new_trigger_id()

    with pytest.raises(SlackApiError) as raised:
        await client.views_open(trigger_id=stale, view=modal())
    assert raised.value.response["error"] == "expired_trigger_id"
    with pytest.raises(SlackApiError) as raised:
        await client.views_open(trigger_id="made.up.trigger", view=modal())
    assert raised.value.response["error"] == "expired_trigger_id"
    assert (await client.views_open(trigger_id=fresh, view=modal()))["ok"] is True
    with pytest.raises(SlackApiError) as raised:
        await client.views_open(trigger_id=fresh, view=modal())
    assert raised.value.response["error"] == "exchanged_trigger_id"

    assert len(fake.violations) == 3
    assert "is expired (older than 3 s)" in fake.violations[0]
    assert "was never issued by this server" in fake.violations[1]
    assert "was already used" in fake.violations[2]


async def test_trigger_ids_expire_after_their_ttl(fake: FakeSlackApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_slack_api, "TRIGGER_TTL", 0.1)  # Slack's 3 s, shortened to keep the test fast
    trigger_id = fake.new_trigger_id()
    time.sleep(0.15)

    with pytest.raises(SlackApiError) as raised:
        await async_client(fake).views_push(trigger_id=trigger_id, view=modal())

    assert raised.value.response["error"] == "expired_trigger_id"
    assert fake.violations == [f"views.push: trigger_id {trigger_id!r} is expired (older than 0.1 s)"]


async def test_view_limits_are_checked(fake: FakeSlackApi) -> None:
    client = async_client(fake)
    text_input = {
        "type": "input",
        "block_id": "why",
        "label": {"type": "plain_text", "text": "Why?"},
        "element": {"type": "plain_text_input", "action_id": "why"},
    }
    bad = modal(
        "t" * 25,
        blocks=[text_input] + [section(str(i)) for i in range(100)],
        private_metadata="m" * 3001,
        callback_id="c" * 256,
    )

    with pytest.raises(SlackApiError) as raised:
        await client.views_open(trigger_id=fake.new_trigger_id(), view=bad)
    with pytest.raises(SlackApiError):
        await client.views_publish(user_id="", view={"type": "home", "blocks": []})

    assert raised.value.response["error"] == "invalid_arguments"
    assert fake.violations == [
        "views.open: view.blocks has 101 items (Slack's max is 100)",
        "views.open: view.title.text is 25 chars (Slack's max is 24)",
        "views.open: view.submit is required when the modal has input blocks",
        "views.open: view.private_metadata is 3001 chars (Slack's max is 3000)",
        "views.open: view.callback_id is 256 chars (Slack's max is 255)",
        "views.publish: `user_id` is required",
    ]
    assert raised.value.response["response_metadata"]["messages"] == fake.violations[:5]


# ---------------------------------------------------------------------- failures on demand


async def test_rate_limit_with_retry_after_is_retried_by_slack_sdk(slack_api: FakeSlackApi) -> None:
    client = async_client(slack_api, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    slack_api.fail_next("chat.postMessage", status=429, retry_after=1)

    started = time.monotonic()
    response = await client.chat_postMessage(channel="C1", text="hi")
    elapsed = time.monotonic() - started

    first, second = slack_api.calls_to("chat.postMessage")
    assert (first.status, first.response["error"]) == (429, "ratelimited")
    assert (second.status, second.response["ok"]) == (200, True)
    assert second.at - first.at >= 1.0
    assert elapsed >= 1.0
    assert response["ts"] == second.response["ts"]


async def test_server_error_raises_without_a_retry_handler(slack_api: FakeSlackApi) -> None:
    client = async_client(slack_api)
    slack_api.fail_next("chat.postMessage", status=500)

    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="C1", text="hi")

    assert raised.value.response.status_code == 500
    assert len(slack_api.calls_to("chat.postMessage")) == 1
    assert (await client.chat_postMessage(channel="C1", text="again"))["ok"] is True
    assert slack_api.violations == []  # injected failures are not violations


async def test_fail_next_with_an_error_and_times(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    slack_api.fail_next("views.publish", status=200, error="not_enabled", times=2)
    view = {"type": "home", "blocks": []}

    errors = []
    for _ in range(2):
        with pytest.raises(SlackApiError) as raised:
            await client.views_publish(user_id="U1", view=view)
        errors.append(raised.value.response["error"])

    assert errors == ["not_enabled", "not_enabled"]
    assert (await client.views_publish(user_id="U1", view=view))["ok"] is True


# ---------------------------------------------------------------------- waiting and resetting


async def test_wait_for_returns_the_calls(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="one")

    calls = await slack_api.wait_for("chat.postMessage")

    assert [call.params["text"] for call in calls] == ["one"]


async def test_wait_for_times_out_with_assertion_error(slack_api: FakeSlackApi, client: AsyncWebClient) -> None:
    await client.auth_test()

    started = time.monotonic()
    with pytest.raises(AssertionError) as raised:
        await slack_api.wait_for("chat.postMessage", count=1, timeout=0.2)

    assert 0.2 <= time.monotonic() - started < 1.0
    assert "expected 1 call(s) of chat.postMessage within 0.2s, got 0" in str(raised.value)
    assert "auth.test" in str(raised.value)


def test_reset_clears_calls_and_violations(fake: FakeSlackApi) -> None:
    with pytest.raises(SlackApiError):
        sync_client(fake).chat_postMessage(channel="C1", text="t", blocks=[{"type": "carousel"}])
    assert fake.calls and fake.violations

    fake.reset()

    assert fake.calls == [] and fake.violations == []


def test_unreadable_json_body_is_a_violation(fake: FakeSlackApi) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    answer = httpx.post(f"{fake.base_url}chat.postMessage", content=b"{not json", headers=headers).json()

    assert answer["ok"] is False and answer["error"] == "invalid_json"
    assert fake.violations[0].startswith("chat.postMessage: unreadable request body")


def test_lifecycle() -> None:
    server = FakeSlackApi()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    with server:
        assert server.base_url == f"{server.url}/api/"
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.post(f"{server.url}/elsewhere").status_code == 404
    server.stop()  # stopping twice is harmless
