"""End to end: the real PTB ``Application`` over HTTP against a local Bot API stand-in, a real SQLite
file, and the real SmolLM2-135M through llama.cpp (its summaries are poor but real: assert structure).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from tg_standin import TelegramStandIn

from bot.config import Config, Secrets
from bot.scheduler import DigestOutcome
from bot.telegram_bot import TelegramAdapter, TelegramSetupError, run_telegram
from storage.db import Database
from storage.digests import digest_runs
from storage.models import Chat, Message, User
from storage.models import Summary as StoredSummary

ROOT = Path(__file__).resolve().parents[1]
FORUM: dict[str, Any] = {"id": -1001234567890, "type": "supergroup", "title": "Team", "is_forum": True}
GROUP: dict[str, Any] = {"id": -1005550001, "type": "supergroup", "title": "Ops"}
ALICE: dict[str, Any] = {"id": 11, "is_bot": False, "first_name": "Alice"}
BOB: dict[str, Any] = {"id": 22, "is_bot": False, "first_name": "Bob"}
CAROL: dict[str, Any] = {"id": 33, "is_bot": False, "first_name": "Carol"}

CONVERSATION = [
    (ALICE, "Can we move the release to Friday? The QA run is not done."),
    (BOB, "Friday works for me, but QA needs all of Thursday."),
    (CAROL, "I will update the changelog by Wednesday evening."),
    (ALICE, "Good. So the release is on Friday morning."),
    (BOB, "Lunch at the Thai place today? <b>12:30</b> & bring *cash*"),
    (CAROL, "Yes, 12:30 works. I booked a table for four."),
]


# The real small model. One thread: llama.cpp's spinning worker threads slow down 10-20x when the
# cores are shared with other processes (measured on the 2-core CI machine), one thread does not.
SMOLLM = {"model": "smollm2-135m", "n_ctx": 4096, "n_threads": 1}


class MutableClock:
    """The bot's clock in these tests: starts at real time, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.offset += delta


class BotThread:
    """``run_telegram`` on its own event loop in a thread, as ``chatsum run`` would run it."""

    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        db: Database,
        clock: MutableClock | None = None,
        tick_seconds: float = 0.5,
    ) -> None:
        self.config, self.secrets, self.db, self.clock = config, secrets, db, clock
        self.tick_seconds = tick_seconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.adapter: TelegramAdapter | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()

            def ready(adapter: TelegramAdapter) -> None:
                self.adapter = adapter
                self._ready.set()

            await run_telegram(
                self.config,
                self.secrets,
                self.db,
                stop=self.stop_event,
                clock=self.clock,
                poll_timeout=1,
                tick_seconds=self.tick_seconds,
                ready=ready,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> BotThread:
        self._thread.start()
        self._ready.wait(120)
        if self.error is not None:
            raise self.error
        return self

    def call(self, coro: Any, timeout: float = 600) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the bot did not shut down"
        if self.error is not None:
            raise self.error


def make_config(tmp_path: Path, standin: TelegramStandIn, **privacy: Any) -> Config:
    return Config.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "data")},
            "telegram": {"enabled": True, "api_base_url": standin.base_url},
            "model": {"llama_cpp": SMOLLM, "max_new_tokens": 512},
            "digest": {"min_new_messages": 3, "grace_minutes": 120},
            "privacy": privacy,
        }
    )


@pytest.fixture()
def standin() -> Iterator[TelegramStandIn]:
    server = TelegramStandIn().start()
    yield server
    server.stop()


@pytest.fixture()
def secrets(standin: TelegramStandIn) -> Secrets:
    return Secrets(telegram_token=SecretStr(standin.token))


def open_db(config: Config) -> Database:
    return Database(config.database_url)


def push_conversation(
    standin: TelegramStandIn,
    chat: dict[str, Any],
    first_id: int,
    start: datetime,
    thread_id: int | None = None,
) -> list[int]:
    ids = []
    for i, (user, text) in enumerate(CONVERSATION):
        mid = first_id + i
        reply = (
            {"message_id": mid - 1, "date": int(start.timestamp()), "chat": chat, "text": "…"}
            if i == 3
            else None
        )
        standin.push_message(
            chat,
            user,
            text,
            mid,
            date=int((start + timedelta(minutes=i)).timestamp()),
            thread_id=thread_id,
            reply_to=reply,
        )
        ids.append(mid)
    return ids


def stored(db: Database, chat_id: int) -> list[Message]:
    with db.session() as s:
        return list(
            s.scalars(
                select(Message).join(Chat).where(Chat.platform_chat_id == str(chat_id)).order_by(Message.id)
            )
        )


def wait_stored(standin: TelegramStandIn, db: Database, chat_id: int, n: int) -> list[Message]:
    return standin.wait_for(
        lambda: (rows := stored(db, chat_id)) and len(rows) >= n and rows, what=f"{n} stored messages"
    )


# -- tests ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_summary_in_forum_topic_is_posted_edited_linked_and_then_cached(
    tmp_path: Path, standin: TelegramStandIn, secrets: Secrets
) -> None:
    config = make_config(tmp_path, standin)
    db = open_db(config)
    bot = BotThread(config, secrets, db).start()
    try:
        start = datetime.now(UTC) - timedelta(minutes=20)
        ids = push_conversation(standin, FORUM, 500, start, thread_id=7)
        standin.push_message(
            GROUP, BOB, "Secret of another chat: the vault code is 4711", 9, date=int(start.timestamp())
        )
        wait_stored(standin, db, FORUM["id"], len(ids))
        command_id = 600
        standin.push_message(FORUM, ALICE, "/summary", command_id, thread_id=7)

        def answered() -> Any:
            return [s for s in standin.messages_in(FORUM["id"]) if s.edits]

        placeholder = standin.wait_for(answered, timeout=900, what="the summary")[0]
        assert placeholder.edits[0] == "Summarizing…"
        assert placeholder.thread_id == 7 and placeholder.reply_to == command_id
        answer = " ".join(s.text for s in standin.messages_in(FORUM["id"]))
        assert "Summary of the latest conversation" in answer
        assert "4711" not in answer  # another chat's messages never reach this summary
        for sent in standin.messages_in(FORUM["id"]):
            assert sent.thread_id == 7
            for href in _hrefs(sent.raw):
                assert href.startswith("https://t.me/c/1234567890/")
                assert int(href.rsplit("/", 1)[1]) in ids
        assert "<b>12:30</b>" not in placeholder.raw  # chat text is escaped, never markup

        rows = stored(db, FORUM["id"])
        assert [r.platform_message_id for r in rows] == [str(i) for i in ids]  # the command is not stored
        assert all(r.thread_id == "7" for r in rows)
        assert rows[3].reply_to == str(ids[2])
        with db.session() as s:
            summaries = list(s.scalars(select(StoredSummary)))
            assert len(summaries) == 1
            row = summaries[0]
            assert row.message_count == len(ids) and row.mode == "chatsum"
            assert row.model_id == "smollm2-135m" and row.prompt_version and len(row.content_hash) == 64
            assert row.content["topics"] or row.content["overall"]

        # Nothing changed: the stored summary answers at once, without a second model call.
        sent_before = len(standin.calls_of("sendMessage"))
        standin.push_message(FORUM, BOB, "/summary", command_id + 1, thread_id=7)
        standin.wait_for(lambda: len(standin.calls_of("sendMessage")) > sent_before, what="the cached answer")
        standin.wait_for(lambda: len(standin.calls_of("editMessageText")) >= 2, what="the cached edit")
        with db.session() as s:
            assert s.scalar(select(func.count(StoredSummary.id))) == 1
    finally:
        bot.stop()
        db.dispose()


def _hrefs(raw: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]+)"', raw)


def test_edits_media_forwards_privacy_and_allow_list(
    tmp_path: Path, standin: TelegramStandIn, secrets: Secrets
) -> None:
    config = make_config(tmp_path, standin, allowed_chats=[f"telegram:{GROUP['id']}"])
    db = open_db(config)
    bot = BotThread(config, secrets, db).start()
    chat = GROUP
    try:
        now = int(time.time())
        standin.push_message(chat, ALICE, "deploy at 5", 1, date=now)
        standin.push_message(chat, ALICE, "deploy at 6 (edited)", 1, date=now, edit_date=now + 30)
        standin.push_message(
            chat,
            BOB,
            None,
            2,
            date=now,
            extra={
                "photo": [{"file_id": "p", "file_unique_id": "pu", "width": 9, "height": 9}],
                "caption": "the <i>new</i> dashboard",
            },
        )
        standin.push_message(
            chat,
            CAROL,
            "look at this",
            3,
            date=now,
            extra={"forward_origin": {"type": "user", "date": now - 99, "sender_user": BOB}},
        )
        standin.push_message(
            chat, CAROL, None, 4, date=now, extra={"new_chat_members": [BOB]}
        )  # a service message: not stored
        rows = wait_stored(standin, db, chat["id"], 3)
        standin.wait_for(lambda: stored(db, chat["id"])[0].edited_at is not None, what="the edit")
        rows = stored(db, chat["id"])
        assert [r.platform_message_id for r in rows] == ["1", "2", "3"]
        assert rows[0].text == "deploy at 6 (edited)"
        assert (rows[1].kind, rows[1].text) == ("photo", "the <i>new</i> dashboard")
        assert rows[2].forwarded_from == "Bob"

        # Opt-out: Bob's later messages keep no text; opt-in restores storing.
        standin.push_message(chat, BOB, "/optout", 10, date=now)
        standin.wait_for(
            lambda: any("don't store" in s.text for s in standin.messages_in(chat["id"])),
            what="the opt-out answer",
        )
        standin.push_message(chat, BOB, "my private thought", 11, date=now + 1)
        rows = wait_stored(standin, db, chat["id"], 4)
        assert rows[-1].text is None and rows[-1].placeholder
        with db.session() as s:
            assert s.scalar(select(User.opted_out).where(User.platform_user_id == "22")) is True

        # /forget deletes the caller's messages in this chat and says how many.
        standin.push_message(chat, ALICE, "/forget", 12, date=now)
        standin.wait_for(
            lambda: any("Deleted 1 of your messages" in s.text for s in standin.messages_in(chat["id"])),
            what="the forget answer",
        )
        assert all(r.sender_name != "Alice" for r in stored(db, chat["id"]))

        # A chat that is not on the allow-list: nothing stored, commands answered with why.
        other: dict[str, Any] = {"id": -1009990000, "type": "supergroup", "title": "Elsewhere"}
        standin.push_message(other, ALICE, "not for you", 1, date=now)
        standin.push_message(other, ALICE, "/summary", 2, date=now)
        standin.wait_for(
            lambda: any("allow-list" in s.text for s in standin.messages_in(other["id"])),
            what="the allow-list answer",
        )
        assert stored(db, other["id"]) == []

        for name in ("/privacy", "/help"):
            standin.push_message(chat, CAROL, name, 20 + len(name), date=now)
        standin.wait_for(
            lambda: (
                any("What I store" in s.text for s in standin.messages_in(chat["id"]))
                and any("/summary 3h" in s.text for s in standin.messages_in(chat["id"]))
            ),
            what="privacy and help",
        )
        assert standin.calls_of("setMyCommands") and standin.calls_of("deleteWebhook")
    finally:
        bot.stop()
        db.dispose()


@pytest.mark.slow
def test_digest_admin_only_fires_at_its_time_once_and_catches_up_after_restart(
    tmp_path: Path, standin: TelegramStandIn, secrets: Secrets
) -> None:
    config = make_config(tmp_path, standin)
    db = open_db(config)
    clock = MutableClock()
    tz = ZoneInfo("Asia/Tokyo")
    at = (clock().astimezone(tz) + timedelta(minutes=10)).strftime("%H:%M")
    chat = GROUP
    standin.admins[chat["id"]] = {ALICE["id"]}
    bot = BotThread(config, secrets, db, clock=clock).start()
    try:
        start = datetime.now(UTC) - timedelta(minutes=30)
        push_conversation(standin, chat, 100, start)
        standin.push_message(chat, BOB, f"/digest {at} Asia/Tokyo", 200)
        standin.wait_for(
            lambda: any("Only chat admins" in s.text for s in standin.messages_in(chat["id"])),
            what="the refusal",
        )
        assert standin.calls_of("getChatMember")[-1]["user_id"] == BOB["id"]
        standin.push_message(chat, ALICE, f"/digest {at} Asia/Tokyo", 201)
        standin.wait_for(
            lambda: any(f"every day at {at} (Asia/Tokyo)" in s.text for s in standin.messages_in(chat["id"])),
            what="the confirmation",
        )
        assert bot.adapter is not None and bot.adapter.scheduler is not None
        scheduler = bot.adapter.scheduler
        assert bot.call(scheduler.tick()) == []  # not due yet

        clock.advance(timedelta(minutes=11))  # the APScheduler tick (every 0.5 s) now finds it due
        digest = standin.wait_for(
            lambda: [s for s in standin.messages_in(chat["id"]) if "Daily digest" in s.text],
            timeout=900,
            what="the digest",
        )
        assert len(digest) == 1
        assert bot.call(scheduler.tick()) == []  # never twice
    finally:
        bot.stop()

    with db.session() as s:
        chat_pk = s.scalar(select(Chat.id).where(Chat.platform_chat_id == str(chat["id"])))
        assert chat_pk is not None
        runs = digest_runs(s, chat_pk)
        assert [r.status for r in runs] == ["posted"]

    # Down over the next day's digest time; back 30 min later (within the 120 min grace): posted once.
    clock.advance(timedelta(days=1, minutes=30))
    later = clock() - timedelta(minutes=40)
    for i, (user, text) in enumerate(CONVERSATION[:4]):
        standin.push_message(chat, user, text, 300 + i, date=int((later + timedelta(minutes=i)).timestamp()))
    bot = BotThread(config, secrets, db, clock=clock).start()
    try:
        standin.wait_for(
            lambda: len([s for s in standin.messages_in(chat["id"]) if "Daily digest" in s.text]) == 2,
            timeout=900,
            what="the caught-up digest",
        )
        outcomes: list[DigestOutcome] = bot.call(bot.adapter.scheduler.tick())  # type: ignore[union-attr]
        assert outcomes == []
    finally:
        bot.stop()
    with db.session() as s:
        runs = digest_runs(s, chat_pk)
        assert [r.status for r in runs] == ["posted", "posted"]
        assert runs[1].message_count == 4  # only what is new since the first digest
    db.dispose()


def test_missing_or_rejected_token_names_the_variable(tmp_path: Path, standin: TelegramStandIn) -> None:
    config = make_config(tmp_path, standin)
    db = open_db(config)
    try:
        with pytest.raises(TelegramSetupError, match="CHATSUM_TELEGRAM_TOKEN"):
            asyncio.run(run_telegram(config, Secrets(), db))
        with pytest.raises(TelegramSetupError, match="CHATSUM_TELEGRAM_TOKEN"):
            asyncio.run(run_telegram(config, Secrets(telegram_token=SecretStr("999:wrong")), db))
    finally:
        db.dispose()


def test_webhook_checks_the_secret_and_commits_before_answering(
    tmp_path: Path, standin: TelegramStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = make_config(tmp_path, standin).model_copy(deep=True)
    config.telegram.mode = "webhook"
    config.telegram.webhook_url = "https://bot.example.com/hook/x1"
    config.telegram.webhook_port = port
    secrets = Secrets(telegram_token=SecretStr(standin.token), telegram_webhook_secret=SecretStr("s3cret"))
    db = open_db(config)
    caplog.set_level(logging.DEBUG)
    bot = BotThread(config, secrets, db).start()
    try:
        standin.wait_for(lambda: standin.calls_of("setWebhook"), what="setWebhook")
        assert standin.calls_of("setWebhook")[0]["secret_token"] == "s3cret"
        update = {"update_id": 1, "message": {"message_id": 5, "date": int(time.time()), "chat": GROUP,
                                              "from": ALICE, "text": "via webhook"}}
        url = f"http://127.0.0.1:{port}/hook/x1"
        refused = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
        assert refused.status_code == 403
        assert stored(db, GROUP["id"]) == []
        answer = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
        assert answer.status_code == 200
        assert [r.text for r in stored(db, GROUP["id"])] == ["via webhook"]  # committed before the 200
    finally:
        bot.stop()
        db.dispose()
    assert "<redacted>" in caplog.text  # the Bot API URL was logged, without its token
    assert standin.token not in caplog.text and "s3cret" not in caplog.text


# -- fault test: SIGKILL while messages arrive ------------------------------------------------------------

BOT_SCRIPT = """
import asyncio, json, logging, os, sys
from pydantic import SecretStr
from bot.config import Config, Secrets
from bot.telegram_bot import run_telegram
from storage.db import Database
logging.basicConfig(level=logging.WARNING)
config = Config.model_validate(json.loads(os.environ["BOT_CONFIG"]))
db = Database(config.database_url)
asyncio.run(run_telegram(config, Secrets(telegram_token=SecretStr(os.environ["BOT_TOKEN"])), db,
                         handle_signals=True, poll_timeout=1))
"""


def _spawn_bot(config: Config, token: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BOT_CONFIG": config.model_dump_json(),
        "BOT_TOKEN": token,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([sys.executable, "-c", BOT_SCRIPT], cwd=ROOT, env=env)


def test_sigkill_while_messages_arrive_loses_and_duplicates_nothing(
    tmp_path: Path, standin: TelegramStandIn
) -> None:
    config = make_config(tmp_path, standin)
    db = open_db(config)  # migrated before the bot starts
    total = 400
    chat = GROUP
    now = int(time.time())
    stop_feeding = threading.Event()

    def feed() -> None:
        for i in range(total):
            if stop_feeding.is_set():
                return
            standin.push_message(
                chat, [ALICE, BOB, CAROL][i % 3], f"message number {i}", 1000 + i, date=now + i
            )
            if i % 20 == 19:
                time.sleep(0.1)  # bursts of 20, about 200 messages a second: the bot always has a backlog

    feeder = threading.Thread(target=feed, daemon=True)
    proc = _spawn_bot(config, standin.token)
    try:
        standin.wait_for(lambda: standin.calls_of("getUpdates"), timeout=120, what="the bot to start polling")
        feeder.start()
        # Kill once the bot has acknowledged a good part of the stream, while more keeps arriving.
        standin.wait_for(
            lambda: standin.confirmed_below > standin.first_update_id + 60,
            timeout=120,
            what="the bot to acknowledge updates",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        acknowledged = standin.confirmed_below
        ack_messages = acknowledged - standin.first_update_id
        delivered_unacknowledged = standin.pending_updates()
        if os.environ.get("CHATSUM_TEST_VERBOSE"):
            print(f"killed with {ack_messages} acknowledged, {delivered_unacknowledged} pending")
        assert ack_messages < total  # killed mid-stream, with more still to come
        # Every acknowledged update is already committed: the ack came after the commit.
        committed = {int(r.platform_message_id) for r in stored(db, chat["id"])}
        assert set(range(1000, 1000 + ack_messages)) <= committed

        feeder.join(120)
        proc = _spawn_bot(config, standin.token)
        standin.wait_for(
            lambda: standin.pending_updates() == 0 and len(stored(db, chat["id"])) >= total,
            timeout=120,
            what="the restarted bot to catch up",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # a clean shutdown on SIGTERM
    finally:
        stop_feeding.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    rows = stored(db, chat["id"])
    ids = [int(r.platform_message_id) for r in rows]
    assert sorted(ids) == list(range(1000, 1000 + total))  # every message, exactly once
    assert all(r.text == f"message number {int(r.platform_message_id) - 1000}" for r in rows)
    db.dispose()
