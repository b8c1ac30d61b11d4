"""Which Slack events are conversation, and in what storage form (the pure part of the Slack adapter)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack.adapter import parse_mention, split_public
from bot.slack.events import (
    BotIdentity,
    chat_type_of,
    is_thread_bookkeeping,
    profile_names,
    to_incoming,
    user_ids,
)

BOT = BotIdentity(user_id="UBOT", bot_id="BBOT")
USERS = {"U1": "Ann", "U2": "Ben"}


def message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "message", "channel": "C1", "user": "U1", "text": "hello",
                            "ts": "1712345678.000100", "channel_type": "channel"}
    base.update(fields)
    return base


def test_plain_message_and_thread_reply() -> None:
    root = to_incoming(message(), users=USERS, channel_title="general", bot=BOT)
    assert root is not None
    assert (root.platform, root.chat_id, root.message_id, root.sender_name, root.text, root.chat_title) == (
        "slack", "C1", "1712345678.000100", "Ann", "hello", "general")
    reply = to_incoming(message(ts="1712345690.000200", thread_ts="1712345678.000100", user="U2",
                                text="<@U1> agreed"), users=USERS, bot=BOT)
    assert reply is not None
    assert (reply.thread_id, reply.reply_to, reply.text) == ("1712345678.000100", "1712345678.000100",
                                                              "@Ann agreed")


def test_edit_and_delete() -> None:
    original = message()
    changed = {"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C1",
               "channel_type": "channel", "ts": "1712345700.000300",
               "message": {**original, "text": "hello again",
                           "edited": {"user": "U1", "ts": "1712345700.000300"}},
               "previous_message": original}
    edit = to_incoming(changed, users=USERS, bot=BOT)
    assert edit is not None and edit.text == "hello again" and edit.edited_at is not None
    assert edit.message_id == original["ts"]
    deleted = {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": "C1",
               "channel_type": "channel", "ts": "1712345800.000400", "deleted_ts": original["ts"],
               "previous_message": original}
    gone = to_incoming(deleted, users=USERS, bot=BOT)
    assert gone is not None and gone.deleted and gone.text is None and gone.message_id == original["ts"]


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (message(channel_type="im", channel="D1"), "a DM"),
        (message(channel_type="mpim", channel="G9"), "a group DM"),
        (message(subtype="channel_join", text="<@U1> has joined the channel"), "a service message"),
        (message(user="UBOT", text="Summary of the latest conversation"), "the bot's own post"),
        (message(bot_id="BBOT", user="UBOT2"), "the bot's own post (by bot id)"),
        (message(text="<@UBOT> summary 3h"), "an instruction to the bot"),
        (message(subtype="message_replied"), "reply-count bookkeeping"),
        ({"type": "message", "subtype": "message_changed", "channel": "C1", "channel_type": "channel",
          "ts": "1712345700.000300", "message": message(reply_count=2), "previous_message": message()},
         "a reply count update"),
        (message(ts="not-a-ts"), "a malformed ts"),
        ({"type": "message", "user": "U1", "text": "x", "ts": "1712345678.000100"}, "no channel"),
    ],
)
def test_not_stored(event: dict[str, Any], why: str) -> None:
    assert to_incoming(event, users=USERS, bot=BOT) is None, why


def test_bookkeeping_detection_and_names() -> None:
    real_edit = {"subtype": "message_changed", "message": {"text": "b", "edited": {"ts": "1.1"}},
                 "previous_message": {"text": "a"}}
    assert not is_thread_bookkeeping(real_edit)
    assert is_thread_bookkeeping({"subtype": "message_changed", "message": {"text": "a", "reply_count": 1},
                                  "previous_message": {"text": "a"}})
    event = message(text="ping <@U2> and <@W3|someone>", user_profile={"display_name": "Annie"})
    assert user_ids(event) == {"U1", "U2", "W3"}
    assert profile_names(event) == {"U1": "Annie"}
    assert chat_type_of({"channel": "G123"}) == "private_channel"
    assert chat_type_of({"channel": "C1", "channel_type": "group"}) == "private_channel"


def test_command_text() -> None:
    assert split_public("public 3h about the launch") == (True, "3h about the launch")
    assert split_public("about public holidays") == (False, "about public holidays")
    assert split_public("  PUBLIC ") == (True, "")
    assert parse_mention("<@UBOT> summary 200", "UBOT") == ("summary", "200")
    assert parse_mention("<@UBOT|chatsum> 3h", "UBOT") == ("summary", "3h")
    assert parse_mention("<@UBOT> privacy", "UBOT") == ("privacy", "")
    assert parse_mention("<@UBOT>", "UBOT") == ("summary", "")
