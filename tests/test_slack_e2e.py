"""End to end: the real Bolt ``AsyncApp`` of ``run_slack`` over real HTTP (and Socket Mode) against the
local Slack stand-in, a real SQLite file and the real SmolLM2-135M through llama.cpp.

Assertions are on structure (who got what, where, within which limits, what is stored), never on the
model's wording or on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.web.async_client import AsyncWebClient
from slack_standin import MAX_BLOCKS, MAX_SECTION_TEXT, ApiCall, SlackStandIn
from sqlalchemy import select

from bot.config import Config, Secrets, parse_config
from bot.scheduler import DigestScheduler
from bot.service import ChatService, Reply, make_engine
from bot.slack import SlackAdapter, SlackSetupError, run_slack
from bot.slack.adapter import SLASH_COMMANDS, THREAD_SHORTCUT
from bot.slack.replies import SlackPoster, archive_link
from bot.worker import ModelWorker
from model.schema import KeyPoint, Summary, Topic
from model.windows import WindowMessage
from storage.db import Database
from storage.models import Chat, Message
from storage.models import Summary as StoredSummary

C_GENERAL = "C0GENERAL"
C_OTHER = "C0OTHER"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
LINK = re.compile(r"<(https://[^|>]+)\|")
MODEL = {"backend": "llama_cpp", "language": "en", "max_new_tokens": 256,
         "llama_cpp": {"model": "smollm2-135m", "n_ctx": 2048}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(standin: SlackStandIn, mode: str, privacy: dict[str, Any] | None = None,
                **slack: Any) -> Config:
    return parse_config({
        "model": MODEL,
        "slack": {"enabled": True, "mode": mode, "api_base_url": standin.api_url, "http_port": free_port(),
                  **slack},
        "digest": {"min_new_messages": 1},
        "privacy": privacy or {},
    })


def secrets_for(standin: SlackStandIn, **override: str | None) -> Secrets:
    env = {"CHATSUM_SLACK_BOT_TOKEN": standin.bot_token, "CHATSUM_SLACK_APP_TOKEN": standin.app_token,
           "CHATSUM_SLACK_SIGNING_SECRET": standin.signing_secret}
    for key, value in override.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return Secrets.from_env(env)


@pytest.fixture(scope="module")
def worker() -> Iterator[ModelWorker[Any]]:
    """One real model for the module (loaded on the first summary only)."""
    engine_config = parse_config({"model": MODEL})
    model_worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(engine_config))
    yield model_worker
    model_worker.stop()


def workspace() -> SlackStandIn:
    standin = SlackStandIn()
    standin.add_user(ALICE, "alice", "Alice Adams", admin=True)
    standin.add_user(BOB, "bob", "Bob Brown")
    standin.add_user(CAROL, "carol", "Carol Chen")
    standin.add_channel(C_GENERAL, "release", creator=CAROL)
    standin.add_channel(C_OTHER, "random", creator=ALICE)
    return standin


@dataclass
class Bot:
    standin: SlackStandIn
    config: Config
    db: Database
    service: ChatService
    scheduler: DigestScheduler
    adapter: SlackAdapter
    now: list[datetime]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.slack.http_port}{self.config.slack.http_path}"


@contextlib.asynccontextmanager
async def running(db: Database, worker: ModelWorker[Any], mode: str = "http",
                  privacy: dict[str, Any] | None = None, **slack: Any) -> AsyncIterator[Bot]:
    """The stand-in plus ``run_slack`` as a task; yields once Slack can reach the bot."""
    standin = workspace()
    await standin.start()
    config = make_config(standin, mode, privacy, **slack)
    now = [datetime.now(UTC)]
    service = ChatService(config, db, worker, clock=lambda: now[0])
    scheduler = DigestScheduler(service, name=f"slack-test-{id(service)}", use_apscheduler=False)
    stop = asyncio.Event()
    ready: asyncio.Future[SlackAdapter] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_slack(config, secrets_for(standin), db, service=service,
                                         scheduler=scheduler, stop=stop, ready=ready.set_result))
    try:
        waiting: set[asyncio.Future[Any]] = {task, ready}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped it
        yield Bot(standin, config, db, service, scheduler, ready.result(), now)
    finally:
        stop.set()
        await task
        await standin.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# -- database helpers -------------------------------------------------------------------------------------


def stored(db: Database, channel: str = C_GENERAL) -> dict[str, Message]:
    with db.session() as session:
        rows = session.scalars(
            select(Message).join(Chat, Chat.id == Message.chat_id)
            .where(Chat.platform == "slack", Chat.platform_chat_id == channel)
        ).all()
        return {m.platform_message_id: m for m in rows}


def chat_settings(db: Database, channel: str = C_GENERAL) -> dict[str, Any]:
    with db.session() as session:
        chat = session.scalars(select(Chat).where(Chat.platform == "slack",
                                                  Chat.platform_chat_id == channel)).one_or_none()
        return dict(chat.settings or {}) if chat else {}


def summaries(db: Database) -> list[StoredSummary]:
    with db.session() as session:
        return list(session.scalars(select(StoredSummary).order_by(StoredSummary.id)))


# -- what the bot posted ----------------------------------------------------------------------------------


def check_message(call: ApiCall) -> list[dict[str, Any]]:
    """A posted message is within Slack's limits and has a fallback text; returns its blocks."""
    args = call.args
    assert args.get("text"), "every message needs a fallback text for notifications"
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= MAX_SECTION_TEXT
    return list(blocks)


def section_text(calls: list[ApiCall]) -> str:
    return "\n".join(b["text"]["text"] for c in calls for b in check_message(c) if b["type"] == "section")


def check_links(text: str, channel: str, messages: dict[str, Message], workspace_url: str) -> int:
    """Every link is the permalink of a stored message of this channel (thread replies with their root)."""
    links = LINK.findall(text)
    for link in links:
        ts_digits = re.match(rf"{re.escape(workspace_url)}archives/{channel}/p(\d+)", link)
        assert ts_digits is not None, link
        ts = next((t for t in messages if t.replace(".", "") == ts_digits.group(1)), None)
        assert ts is not None, f"{link} points to no stored message"
        assert link == archive_link(workspace_url, channel, ts, messages[ts].thread_id)
    return len(links)


# -- tests ------------------------------------------------------------------------------------------------


def test_http_mode_events_retries_signatures_and_settings(db: Database, worker: ModelWorker[Any]) -> None:
    """Channel messages with a thread, an edit, a delete, a retried event, a forged request, the settings
    check — everything except the model."""

    async def scenario() -> None:
        async with running(db, worker) as bot:
            s = bot.standin
            root = s.message(C_GENERAL, ALICE, "Release plan: ship v2 on Friday? <@U0BOB> can you check CI")
            reply1 = s.message(C_GENERAL, BOB, "CI is green, Friday works", thread_ts=root["ts"])
            reply2 = s.message(C_GENERAL, CAROL, "I'll write the changelog", thread_ts=root["ts"])
            plain = s.message(C_GENERAL, CAROL, "Lunch at noon?")
            for event in (root, reply1, reply2, plain):
                assert (await s.send_event(bot.url, event)).status == 200
            # Slack did not see the 200 in time and sends the same event again.
            retry = await s.send_event(bot.url, reply1, event_id="EvSAME", retry_num=None)
            again = await s.send_event(bot.url, reply1, event_id="EvSAME", retry_num=1)
            assert (retry.status, again.status) == (200, 200)
            assert (await s.send_event(bot.url, s.edit(plain, "Lunch at 12:30 instead?"))).status == 200
            assert (await s.send_event(bot.url, s.delete(reply2))).status == 200

            rows = stored(db)
            assert set(rows) == {root["ts"], reply1["ts"], reply2["ts"], plain["ts"]}  # once each
            assert rows[reply1["ts"]].thread_id == root["ts"] and rows[reply1["ts"]].reply_to == root["ts"]
            assert rows[root["ts"]].sender_name == "Alice Adams"  # users.info
            assert "@Bob Brown" in (rows[root["ts"]].text or "")  # <@U0BOB> resolved
            assert rows[plain["ts"]].text == "Lunch at 12:30 instead?" and rows[plain["ts"]].edited_at
            assert rows[reply2["ts"]].deleted and rows[reply2["ts"]].text is None
            with db.session() as session:
                chat = session.scalars(select(Chat).where(Chat.platform_chat_id == C_GENERAL)).one()
                assert (chat.title, chat.type) == ("release", "channel")
            user_lookups = [c for c in s.calls if c.method == "users.info" and c.args.get("user") == ALICE]
            assert len(user_lookups) == 1  # cached

            # A forged request (wrong signature) is refused and stores nothing.
            forged = s.message(C_GENERAL, BOB, "forged")
            bad = await s.send_event(bot.url, forged, signature="v0=" + "0" * 64)
            assert bad.status == 401
            assert forged["ts"] not in stored(db)

            # A non-admin cannot turn the digest on; the answer is ephemeral, to them only.
            denied = await s.send_command(bot.url, "/digest", user=BOB, channel=C_GENERAL, text="on")
            assert denied.status == 200
            answer = await s.wait_for(lambda: s.posted("chat.postEphemeral", user=BOB, channel=C_GENERAL))
            assert "admin" in section_text(answer) + answer[0].args["text"]
            assert not chat_settings(db).get("digest", {}).get("enabled")
            # A workspace admin can.
            await s.send_command(bot.url, "/digest", user=ALICE, channel=C_GENERAL,
                                 text="08:30 Europe/Berlin")
            await s.wait_for(lambda: s.posted("chat.postEphemeral", user=ALICE, channel=C_GENERAL))
            digest = chat_settings(db)["digest"]
            assert (digest["enabled"], digest["time"], digest["tz"]) == (True, "08:30", "Europe/Berlin")
            assert not s.posted("chat.postMessage")  # settings answers are never public

            # Help mentions Slack's own ways in; a command resent with the same trigger_id is answered once.
            payload_trigger = "777.help.trigger"
            for _ in range(2):
                await s.send_command(bot.url, "/summary", user=CAROL, channel=C_GENERAL, text="help",
                                     trigger_id=payload_trigger)
            await s.wait_for(lambda: s.posted("chat.postEphemeral", user=CAROL))
            await asyncio.sleep(0.5)  # a second answer, if any, would have been posted by now
            helps = s.posted("chat.postEphemeral", user=CAROL)
            assert len(helps) == 1 and "Summarize thread" in helps[0].args["text"]

    run(scenario)


def test_http_mode_summary_thread_mention_and_digest(db: Database, worker: ModelWorker[Any]) -> None:
    """/summary (ephemeral, then public), the thread shortcut, a retried mention and the daily digest,
    with the real model."""

    async def scenario() -> None:
        async with running(db, worker) as bot:
            s = bot.standin
            events = [
                s.message(C_GENERAL, ALICE, "Should we ship the release on Friday?"),
            ]
            root = events[0]
            events += [
                s.message(C_GENERAL, BOB, "Friday works if the tests pass.", thread_ts=root["ts"]),
                s.message(C_GENERAL, CAROL, "I will fix the login bug by Thursday.", thread_ts=root["ts"]),
                s.message(C_GENERAL, ALICE, "Great, Friday it is."),
                s.message(C_GENERAL, BOB, "I will announce it to the customers."),
            ]
            gone = s.message(C_GENERAL, CAROL, "oops, wrong channel")
            for event in [*events, gone]:
                assert (await s.send_event(bot.url, event)).status == 200
            assert (await s.send_event(bot.url, s.delete(gone))).status == 200
            other = s.message(C_OTHER, CAROL, "Secret plans for the other channel")
            assert (await s.send_event(bot.url, other)).status == 200

            # /summary: acknowledged at once (Slack shows the ack text to the asker), answered ephemerally.
            ack = await s.send_command(bot.url, "/summary", user=BOB, channel=C_GENERAL)
            assert ack.status == 200 and "Summarizing" in ack.body  # a plain-text ack is shown as is
            answer = await s.wait_for(lambda: s.posted("chat.postEphemeral", user=BOB, channel=C_GENERAL))
            text = section_text(answer)
            assert "Summary of the latest conversation" in text
            assert not s.posted("chat.postMessage")
            rows = stored(db)
            check_links(text, C_GENERAL, rows, s.workspace_url)
            made = summaries(db)
            assert len(made) == 1 and made[0].message_count == len(events)  # the deleted one left out
            with db.session() as session:
                general_pk = session.scalars(select(Chat.id).where(Chat.platform_chat_id == C_GENERAL)).one()
            assert made[0].chat_id == general_pk

            # /summary public: the same window, answered from the stored summary, posted for everyone.
            await s.send_command(bot.url, "/summary", user=CAROL, channel=C_GENERAL, text="public")
            public = await s.wait_for(lambda: s.posted("chat.postMessage", channel=C_GENERAL))
            assert "Summary of the latest conversation" in section_text(public)
            assert len(summaries(db)) == 1

            # The "Summarize thread" shortcut on a reply: the thread only, ephemeral, in the thread.
            await s.send_shortcut(bot.url, THREAD_SHORTCUT, user=CAROL, channel=C_GENERAL, message=events[2])
            thread_answer = await s.wait_for(
                lambda: s.posted("chat.postEphemeral", user=CAROL, channel=C_GENERAL, thread_ts=root["ts"]))
            assert "Summary of this thread" in section_text(thread_answer)
            made = summaries(db)
            assert len(made) == 2 and made[1].message_count == 3  # root and two replies

            # "@chatsum summary" in the thread, delivered twice (X-Slack-Retry-Num: 1): one public answer.
            mention = s.mention(C_GENERAL, ALICE, "summary", thread_ts=root["ts"])
            first = await s.send_event(bot.url, mention, event_id="EvMENTION")
            retried = await s.send_event(bot.url, mention, event_id="EvMENTION", retry_num=1)
            assert (first.status, retried.status) == (200, 200)

            def thread_posts() -> list[ApiCall]:
                return s.posted("chat.postMessage", channel=C_GENERAL, thread_ts=root["ts"])

            await s.wait_for(thread_posts)
            await asyncio.sleep(0.5)
            assert len(thread_posts()) == 1
            assert "Summary of this thread" in section_text(thread_posts())
            assert len(summaries(db)) == 2  # answered from the stored thread summary
            assert mention["ts"] not in stored(db)  # an instruction to the bot is not conversation

            # The daily digest fires at its time (the service's clock is moved, not waited for) — once.
            at = (bot.now[0] + timedelta(hours=2)).strftime("%H:%M")
            await s.send_command(bot.url, "/digest", user=ALICE, channel=C_GENERAL, text=f"{at} UTC")
            await s.wait_for(lambda: chat_settings(db).get("digest", {}).get("enabled"))
            assert await bot.scheduler.tick() == []  # not yet
            bot.now[0] += timedelta(hours=2, minutes=1)
            outcomes = await bot.scheduler.tick()
            assert [o.status for o in outcomes] == ["posted"]
            digests = [c for c in s.posted("chat.postMessage", channel=C_GENERAL)
                       if "Daily digest" in c.args["text"] and not c.args.get("thread_ts")]
            assert len(digests) == 1
            check_links(section_text(digests), C_GENERAL, stored(db), s.workspace_url)
            assert await bot.scheduler.tick() == []  # never twice
            # Nothing was ever posted to the other channel, and no summary covers it.
            assert not [c for c in s.calls
                        if c.args.get("channel") == C_OTHER and c.method.startswith("chat.")]

    run(scenario)


def test_socket_mode_stores_and_answers_over_the_websocket(db: Database, worker: ModelWorker[Any]) -> None:
    """The default mode: envelopes over the stand-in's websocket, acknowledged after the commit."""

    async def scenario() -> None:
        async with running(db, worker, mode="socket", settings_by="channel_creator") as bot:
            s = bot.standin
            event = s.message(C_GENERAL, BOB, "Socket mode works")
            ack = await s.push("events_api", s.event_callback(event))
            assert event["ts"] in stored(db)  # committed before the ack came back
            assert ack.envelope_id
            again = await s.push("events_api", s.event_callback(event), retry_attempt=1)
            assert again.envelope_id and len(stored(db)) == 1

            # channel_creator: Carol created #release, so she may change its digest; Bob may not.
            command = s.command_payload("/digest", user=BOB, channel=C_GENERAL, text="on")
            await s.push("slash_commands", command)
            await s.wait_for(lambda: s.posted("chat.postEphemeral", user=BOB))
            assert "creator" in s.posted("chat.postEphemeral", user=BOB)[0].args["text"]
            creator = s.command_payload("/digest", user=CAROL, channel=C_GENERAL, text="on")
            await s.push("slash_commands", creator)
            await s.wait_for(lambda: chat_settings(db).get("digest", {}).get("enabled"))

            # In a channel the bot was not invited to, the answer goes through the command's response_url.
            s.add_channel("C0NOBOT", "secret", creator=ALICE, bot_member=False)
            await s.push("slash_commands", s.command_payload("/privacy", user=BOB, channel="C0NOBOT"))
            await s.wait_for(lambda: s.responses)
            assert s.responses[0]["response_type"] == "ephemeral"
            assert "What I store" in s.responses[0]["text"]

    run(scenario)


def test_allow_list_keeps_other_channels_out(db: Database, worker: ModelWorker[Any]) -> None:
    async def scenario() -> None:
        async with running(db, worker, privacy={"allowed_chats": [f"slack:{C_OTHER}"]}) as bot:
            s = bot.standin
            assert (await s.send_event(bot.url, s.message(C_GENERAL, BOB, "not allowed"))).status == 200
            assert (await s.send_event(bot.url, s.message(C_OTHER, BOB, "allowed"))).status == 200
            assert stored(db, C_GENERAL) == {} and len(stored(db, C_OTHER)) == 1

    run(scenario)


@pytest.mark.parametrize(
    ("mode", "override", "named"),
    [
        ("http", {"CHATSUM_SLACK_BOT_TOKEN": None}, "CHATSUM_SLACK_BOT_TOKEN"),
        ("http", {"CHATSUM_SLACK_BOT_TOKEN": "xoxb-wrong"}, "CHATSUM_SLACK_BOT_TOKEN"),
        ("http", {"CHATSUM_SLACK_SIGNING_SECRET": None}, "CHATSUM_SLACK_SIGNING_SECRET"),
        ("socket", {"CHATSUM_SLACK_APP_TOKEN": None}, "CHATSUM_SLACK_APP_TOKEN"),
        ("socket", {"CHATSUM_SLACK_APP_TOKEN": "xapp-wrong"}, "CHATSUM_SLACK_APP_TOKEN"),
    ],
)
def test_missing_or_rejected_token_names_the_variable(
    db: Database, worker: ModelWorker[Any], mode: str, override: dict[str, str | None], named: str
) -> None:
    async def scenario() -> None:
        standin = workspace()
        await standin.start()
        try:
            config = make_config(standin, mode)
            service = ChatService(config, db, worker)
            scheduler = DigestScheduler(service, name="slack-token-test", use_apscheduler=False)
            with pytest.raises(SlackSetupError, match=named):
                await run_slack(config, secrets_for(standin, **override), db, service=service,
                                scheduler=scheduler)
        finally:
            await standin.close()

    run(scenario)


def test_unreachable_api_names_the_setting(db: Database, worker: ModelWorker[Any]) -> None:
    async def scenario() -> None:
        standin = workspace()
        config = parse_config({"slack": {"mode": "http", "api_base_url": f"http://127.0.0.1:{free_port()}/api/"}})
        service = ChatService(config, db, worker)
        with pytest.raises(SlackSetupError, match=r"slack\.api_base_url"):
            await run_slack(config, secrets_for(standin), db, service=service,
                            scheduler=DigestScheduler(service, name="unreachable", use_apscheduler=False))

    run(scenario)


def test_manifest_matches_the_adapter() -> None:
    """The manifest users paste into Slack declares what the code listens to, with the scopes it needs."""
    manifest = yaml.safe_load((Path(__file__).parents[1] / "bot" / "slack_manifest.yaml").read_text())
    commands = {c["command"].lstrip("/") for c in manifest["features"]["slash_commands"]}
    assert commands == set(SLASH_COMMANDS)
    shortcuts = manifest["features"]["shortcuts"]
    assert [(s["type"], s["callback_id"]) for s in shortcuts] == [("message", THREAD_SHORTCUT)]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"channels:history", "groups:history", "chat:write", "commands", "users:read",
            "channels:read", "groups:read", "app_mentions:read"} <= scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == {"message.channels", "message.groups", "app_mention"}
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_archive_links() -> None:
    base = "https://acme.slack.com/"
    assert archive_link(base, "C1", "1712345678.000100") == "https://acme.slack.com/archives/C1/p1712345678000100"
    assert archive_link(base, "C1", "1712345679.000200", "1712345678.000100") == (
        "https://acme.slack.com/archives/C1/p1712345679000200?thread_ts=1712345678.000100&cid=C1")
    assert archive_link(base, "C1", "1712345678.000100", "1712345678.000100") == (
        "https://acme.slack.com/archives/C1/p1712345678000100")  # a thread's root links as itself
    assert archive_link("", "C1", "1712345678.000100") is None



def test_long_summary_is_split_within_limits_with_permalinks() -> None:
    """A summary far beyond one message: every part is accepted by the stand-in's Slack limits, and each
    cited message links to its permalink (built from auth.test's URL, or chat.getPermalink without it)."""
    root_ts, reply_ts = "1712345678.000100", "1712345679.000200"
    window = (
        WindowMessage(1, root_ts, datetime(2024, 4, 5, tzinfo=UTC), "Ann", "root"),
        WindowMessage(2, reply_ts, datetime(2024, 4, 5, tzinfo=UTC), "Ben", "reply", reply_to=root_ts,
                      thread_id=root_ts),
    )
    topics = [Topic(title=f"Topic {i} " + "x" * 150,
                    key_points=[KeyPoint(text=f"point {i}.{j} " + "<&>*_~ " * 120, message_refs=[1, 2])
                                for j in range(4)])
              for i in range(60)]
    summary = Summary(topics=topics, overall="All done.")
    reply = Reply(summary=summary, title="Summary of the latest conversation", refs={1: root_ts, 2: reply_ts},
                  kind="summary", window=window)

    async def scenario() -> None:
        standin = workspace()
        await standin.start()
        try:
            client = AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)
            poster = SlackPoster(client, standin.workspace_url)
            sent = await poster.send(C_GENERAL, reply, user=BOB)
            posts = standin.posted("chat.postEphemeral", user=BOB)
            assert sent == len(posts) > 1  # split, and every part accepted
            text = section_text(posts)
            links = set(LINK.findall(text))
            assert links == {
                f"{standin.workspace_url}archives/{C_GENERAL}/p1712345678000100",
                f"{standin.workspace_url}archives/{C_GENERAL}/p1712345679000200"
                f"?thread_ts={root_ts}&cid={C_GENERAL}",
            }
            assert "&lt;&amp;&gt;" in text  # Slack's control characters escaped
            assert not [c for c in standin.calls if c.method == "chat.getPermalink"]

            standin.calls.clear()
            await SlackPoster(client).send(C_GENERAL, reply, user=BOB)  # workspace URL unknown
            assert len([c for c in standin.calls if c.method == "chat.getPermalink"]) == 2
            assert LINK.findall(section_text(standin.posted("chat.postEphemeral", user=BOB)))
        finally:
            await standin.close()

    run(scenario)
