"""The platform-neutral core: command grammar, worker, rate limits, digest timing, and ChatService on a real
SQLite file (with the real SmolLM2-135M where a summary is made)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pg_server import BACKENDS
from sqlalchemy import func, select

from bot.commands import CommandError, parse_digest_args, parse_summary_args, split_command
from bot.config import Config
from bot.ratelimit import Limit, RateLimiter, busy_message
from bot.scheduler import DigestScheduler, due_digest
from bot.service import ChatService, Reply, Requester, make_engine, to_chat_messages
from bot.worker import ModelWorker, WorkerBusy
from model.windows import WindowMessage
from storage.db import Database
from storage.digests import CLAIM_LEASE, claim_digest, digest_runs, finish_digest
from storage.ingest import IncomingMessage, Ingestor
from storage.models import Chat, Message
from storage.models import Summary as StoredSummary

# -- command grammar --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "last", "since", "focus"),
    [
        ("", None, None, None),
        ("200", 200, None, None),
        ("3h", None, timedelta(hours=3), None),
        ("30m", None, timedelta(minutes=30), None),
        ("2d", None, timedelta(days=2), None),
        ("about the release date", None, None, "the release date"),
        ("2d about   the   release", None, timedelta(days=2), "the release"),
        ("50 about lunch", 50, None, "lunch"),
    ],
)
def test_summary_args(text: str, last: int | None, since: timedelta | None, focus: str | None) -> None:
    args = parse_summary_args(text)
    assert (args.last, args.since, args.focus) == (last, since, focus)
    assert args.mode == ("aspect" if focus else "chatsum")


@pytest.mark.parametrize(
    "text", ["0", "5000", "3x", "about", "yesterday", "8d", "200 lunch", "about " + "x" * 400]
)
def test_bad_summary_args_explain_themselves(text: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_summary_args(text)
    assert str(err.value) and "Traceback" not in str(err.value)


def test_digest_args() -> None:
    assert parse_digest_args("").action == "status"
    assert parse_digest_args("on").action == "on"
    assert parse_digest_args("OFF").action == "off"
    args = parse_digest_args("8:05 Europe/Berlin")
    assert (args.action, args.time, args.tz) == ("set", "08:05", "Europe/Berlin")
    for bad in ("25:00", "on now", "08:00 Mars/Olympus", "08:00 ../../etc/passwd", "noon"):
        with pytest.raises(CommandError):
            parse_digest_args(bad)


def test_split_command_respects_the_addressed_bot() -> None:
    assert split_command("/summary@MyBot 3h", "mybot") == ("summary", "3h")
    assert split_command("/summary@OtherBot 3h", "mybot") is None
    assert split_command("/help") == ("help", "")
    assert split_command("hello /summary") is None


# -- rate limits and the worker ---------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_per_user_and_per_chat() -> None:
    t = FakeTime()
    limiter = RateLimiter(per_chat=Limit(3, 60), per_user=Limit(2, 60), clock=t)
    assert limiter.acquire("c1", "u1") == 0
    assert limiter.acquire("c1", "u1") == 0
    t.now += 10
    assert limiter.acquire("c1", "u1") == 50  # the user's first request leaves the window in 50 s
    assert limiter.acquire("c1", "u2") == 0
    assert limiter.acquire("c1", "u3") == 50  # the chat's limit (3) now binds everybody
    assert limiter.acquire("c2", "u1") == 0  # other chats are independent
    t.now += 51
    assert limiter.acquire("c1", "u1") == 0
    assert busy_message(49.2) == "I'm busy right now — please try again in 50 s."


def test_worker_runs_off_the_loop_one_engine_bounded_queue() -> None:
    made: list[int] = []

    def factory() -> dict[str, Any]:
        made.append(1)
        return {"thread": threading.current_thread().name}

    worker: ModelWorker[dict[str, Any]] = ModelWorker(factory, max_queue=1)
    gate = threading.Event()

    async def scenario() -> None:
        loop_thread = threading.current_thread().name
        assert await worker.run(lambda e: e["thread"]) != loop_thread
        blocker = asyncio.ensure_future(worker.run(lambda e: gate.wait(30)))
        await asyncio.sleep(0.2)  # the blocker is running; the queue (size 1) is empty
        queued = asyncio.ensure_future(worker.run(lambda e: "queued"))
        await asyncio.sleep(0)
        with pytest.raises(WorkerBusy) as busy:
            await worker.run(lambda e: "refused")
        assert busy.value.retry_after > 0
        gate.set()
        assert await blocker is True and await queued == "queued"
        with pytest.raises(ZeroDivisionError):
            await worker.run(lambda e: 1 / 0)  # errors reach the caller, the worker lives on
        assert await worker.run(lambda e: "alive") == "alive"

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
    assert made == [1]  # one engine per process


# -- digest timing ----------------------------------------------------------------------------------------


def test_due_digest_in_the_chats_time_zone_with_grace() -> None:
    settings = {"enabled": True, "time": "09:00", "tz": "Europe/Berlin"}
    grace = timedelta(minutes=120)
    winter = datetime(2026, 1, 15, 7, 59, tzinfo=UTC)  # 08:59 in Berlin
    assert due_digest(winter, settings, grace) is None
    due = due_digest(winter + timedelta(minutes=1), settings, grace)
    assert due is not None and due.local_date == "2026-01-15"
    assert due.scheduled_for == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    assert due_digest(winter + timedelta(minutes=121), settings, grace) is not None
    assert due_digest(winter + timedelta(minutes=122), settings, grace) is None  # past the grace
    summer = datetime(2026, 7, 15, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert due_digest(summer, settings, grace) is not None
    assert due_digest(summer, {**settings, "enabled": False}, grace) is None
    late_switch_on = {**settings, "enabled_at": "2026-07-15T07:30:00+00:00"}
    assert due_digest(summer + timedelta(minutes=31), late_switch_on, grace) is None
    tokyo = {"enabled": True, "time": "00:30", "tz": "Asia/Tokyo"}  # local date differs from UTC's
    due = due_digest(datetime(2026, 3, 1, 15, 45, tzinfo=UTC), tokyo, grace)
    assert due is not None and due.local_date == "2026-03-02"


# -- ChatService on a real database -----------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# The real small model. One thread: llama.cpp's spinning worker threads slow down 10-20x when the
# cores are shared with other processes (measured on the 2-core CI machine), one thread does not.
SMOLLM = {"model": "smollm2-135m", "n_ctx": 4096, "n_threads": 1}


def smollm_config(tmp_path: Path, **digest: Any) -> Config:
    return Config.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "data")},
            "model": {"llama_cpp": SMOLLM, "max_new_tokens": 512},
            "digest": digest or {"min_new_messages": 3},
        }
    )


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    return smollm_config(tmp_path)


@pytest.fixture()
def service(config: Config, db: Database, ingestor: Ingestor) -> Iterator[ChatService]:
    """The service writes through the same Ingestor as the adapters, so an opt-out applies at once."""
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
    yield ChatService(
        config, db, worker, ingestor=ingestor, clock=Clock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    )
    worker.stop()


def add_messages(
    ingestor: Ingestor,
    chat_id: str,
    texts: list[tuple[str, str]],
    start: datetime,
    first_id: int = 1,
    step: timedelta = timedelta(minutes=1),
) -> None:
    ingestor.ingest(
        [
            IncomingMessage(
                platform="telegram",
                chat_id=chat_id,
                message_id=str(first_id + i),
                sent_at=start + i * step,
                sender_id=speaker.lower(),
                sender_name=speaker,
                text=text,
            )
            for i, (speaker, text) in enumerate(texts)
        ]
    )


TEAM = [
    ("Alice", "Can we ship on Friday?"),
    ("Bob", "Friday is fine if QA finishes Thursday."),
    ("Carol", "I will write the release notes."),
    ("Alice", "Then Friday it is."),
]
WHO = Requester("telegram", "-100777", "alice", "Alice")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_friendly_answers_without_a_model(service: ChatService, ingestor: Ingestor) -> None:
    reply: Reply = run(service.handle(WHO, "summary"))
    assert "no messages stored" in reply.text
    reply = run(service.handle(WHO, "summary", "3x"))
    assert reply.kind == "error" and "/summary 3h" in reply.text
    reply = run(service.handle(WHO, "frobnicate"))
    assert reply.kind == "error" and "/summary" in reply.text
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 14, 9, 0, tzinfo=UTC))
    reply = run(service.handle(WHO, "summary", "30m"))  # the chat was quiet for the last 30 minutes
    assert reply.text == "There is nothing to summarize in the last 30 minutes."
    assert "What I store" in run(service.handle(WHO, "privacy")).text


def test_rate_limit_and_busy_worker_answer_politely(service: ChatService, ingestor: Ingestor) -> None:
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 11, 0, tzinfo=UTC))
    service.limiter = RateLimiter(per_chat=Limit(5, 60), per_user=Limit(1, 60), clock=FakeTime())
    service.limiter.acquire("telegram:-100777", "alice")  # Alice just asked
    reply = run(service.handle(WHO, "summary"))
    assert reply.kind == "busy" and reply.text == "I'm busy right now — please try again in 60 s."


def test_digest_settings_need_an_admin(service: ChatService, db: Database) -> None:
    async def yes() -> bool:
        return True

    async def no() -> bool:
        return False

    reply = run(service.handle(WHO, "digest", "08:30 Asia/Tokyo", is_admin=no))
    assert reply.kind == "denied" and "admins" in reply.text
    assert "off" in run(service.handle(WHO, "digest", "")).text
    reply = run(service.handle(WHO, "digest", "08:30 Asia/Tokyo", is_admin=yes))
    assert reply.text == "The daily digest is on: every day at 08:30 (Asia/Tokyo)."
    run(service.handle(WHO, "digest", "off", is_admin=yes))
    with db.session() as s:
        settings = s.scalars(select(Chat.settings)).one()
    assert settings["digest"]["enabled"] is False and settings["digest"]["time"] == "08:30"


def test_optout_forget_and_optin(service: ChatService, ingestor: Ingestor, db: Database) -> None:
    start = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    add_messages(ingestor, "-100777", TEAM, start)
    bob = Requester("telegram", "-100777", "bob", "Bob")
    assert "don't store" in run(service.handle(bob, "optout")).text
    add_messages(ingestor, "-100777", [("Bob", "secret plan")], start + timedelta(minutes=9), first_id=50)
    with db.session() as s:
        row = s.scalars(select(Message).where(Message.platform_message_id == "50")).one()
        assert row.text is None and row.placeholder
    assert run(service.handle(bob, "optin")).text.startswith("Done: I store")
    reply = run(service.handle(WHO, "forget"))
    assert reply.text == "Deleted 2 of your messages in this chat."
    assert run(service.handle(WHO, "forget")).text == "I have no stored messages of yours in this chat."


def test_to_chat_messages_numbers_and_links_replies() -> None:
    t = datetime(2026, 1, 1)
    window = [
        WindowMessage(1, "10", t, "Ann", "hi"),
        WindowMessage(2, "11", t, "Ben", "", reply_to="10", kind="photo"),
        WindowMessage(3, "12", t, "Cy", "ok", reply_to="999"),
    ]
    out = to_chat_messages(window)
    assert [m.ref for m in out] == [1, 2, 3]
    assert out[1].text == "[photo]" and out[1].reply_to_ref == 1
    assert out[2].reply_to_ref is None  # a reply to a message outside the window


def test_engine_failure_is_a_sentence_not_a_traceback(
    tmp_path: Path, db: Database, ingestor: Ingestor
) -> None:
    config = Config.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "d")},
            "model": {"llama_cpp": {"model": str(tmp_path / "missing.gguf")}},
        }
    )
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
    svc = ChatService(config, db, worker, clock=Clock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC)))
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 11, 0, tzinfo=UTC))
    try:
        reply = run(svc.handle(WHO, "summary"))
    finally:
        worker.stop()
    assert reply.kind == "error"
    assert reply.text == "Sorry, I couldn't produce a summary this time. Please try again later."


@pytest.mark.parametrize("db", BACKENDS, indirect=True)  # claims on SQLite and PostgreSQL
def test_digest_skipped_below_minimum_and_claimed_once(
    tmp_path: Path, db: Database, ingestor: Ingestor
) -> None:
    config = smollm_config(tmp_path, min_new_messages=10, grace_minutes=60)
    clock = Clock(datetime(2026, 1, 15, 8, 59, tzinfo=UTC))
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
    svc = ChatService(config, db, worker, clock=clock)
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 7, 0, tzinfo=UTC))
    posted: list[tuple[str, str | None, Reply]] = []

    async def poster(chat_id: str, thread: str | None, reply: Reply) -> None:
        posted.append((chat_id, thread, reply))

    async def yes() -> bool:
        return True

    async def scenario() -> None:
        await svc.handle(WHO, "digest", "09:00 UTC", is_admin=yes)  # switched on at 08:59
        sched = DigestScheduler(svc, use_apscheduler=False)
        sched.register_poster("telegram", poster)
        assert await sched.tick() == []
        clock.now = datetime(2026, 1, 15, 9, 1, tzinfo=UTC)
        outcomes = await sched.tick()
        assert [o.status for o in outcomes] == ["skipped"] and outcomes[0].message_count == 4
        assert await sched.tick() == []  # claimed: the same day never runs again
        restarted = DigestScheduler(svc, use_apscheduler=False)  # a restart finds the claim in the DB
        restarted.register_poster("telegram", poster)
        assert await restarted.tick() == []
        clock.now = datetime(2026, 1, 16, 10, 1, tzinfo=UTC)  # down past the next day's grace
        assert await restarted.tick() == []

    try:
        run(scenario())
    finally:
        worker.stop()
    assert posted == []
    with db.session() as s:
        chat_pk = s.scalars(select(Chat.id)).one()
        assert [(r.local_date, r.status) for r in digest_runs(s, chat_pk)] == [("2026-01-15", "skipped")]


@pytest.mark.parametrize("db", BACKENDS, indirect=True)  # claims on SQLite and PostgreSQL
def test_a_stale_claim_of_another_run_is_taken_over_once(db: Database, ingestor: Ingestor) -> None:
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 7, 0, tzinfo=UTC))
    t0 = datetime(2026, 1, 15, 9, 1, tzinfo=UTC)
    sched = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    with db.session() as s:
        chat_pk = s.scalars(select(Chat.id)).one()
        first = claim_digest(s, chat_pk, "2026-01-15", sched, claimant="run-a", now=t0)
        assert first is not None and first.claimed_by == "run-a"
        first_id = first.id
    def claim(claimant: str, now: datetime) -> Any:
        return claim_digest(s, chat_pk, "2026-01-15", sched, claimant=claimant, now=now)

    with db.session() as s:  # within the lease another run keeps off, and so does the claimant itself
        assert claim("run-b", t0 + timedelta(minutes=5)) is None
        late = t0 + CLAIM_LEASE + timedelta(minutes=1)
        assert claim("run-a", late) is None
    with db.session() as s:  # past the lease, run-a is taken to be dead: run-b takes the same row over
        taken = claim("run-b", late)
        assert taken is not None and (taken.id, taken.claimed_by) == (first_id, "run-b")
        assert "taken over" in taken.detail
    with db.session() as s:  # ... and now holds a fresh lease against a third run
        assert claim("run-c", late + timedelta(minutes=1)) is None
        finish_digest(s, first_id, "posted", message_count=4)
    with db.session() as s:  # a finished digest is never claimed again, however old
        assert claim("run-c", late + timedelta(days=1)) is None
        assert [(r.status, r.claimed_by) for r in digest_runs(s, chat_pk)] == [("posted", "run-b")]


def test_restart_takes_over_the_digest_a_crash_left_claimed(
    tmp_path: Path, db: Database, ingestor: Ingestor
) -> None:
    """A process that died between claiming and posting leaves the day's digest 'claimed'; the next run
    must still handle it (once), within the grace period, once the dead run's lease is over."""
    config = smollm_config(tmp_path, min_new_messages=10, grace_minutes=60)
    clock = Clock(datetime(2026, 1, 15, 8, 59, tzinfo=UTC))
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
    svc = ChatService(config, db, worker, clock=clock)
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 7, 0, tzinfo=UTC))

    async def yes() -> bool:
        return True

    async def poster(chat_id: str, thread: str | None, reply: Reply) -> None:
        raise AssertionError("below min_new_messages nothing is posted")

    async def scenario() -> list[list[str]]:
        await svc.handle(WHO, "digest", "09:00 UTC", is_admin=yes)  # switched on at 08:59
        clock.now = datetime(2026, 1, 15, 9, 1, tzinfo=UTC)
        with db.session() as s:  # the crashed run's claim, made at 09:01
            chat_pk = s.scalars(select(Chat.id)).one()
            nine = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
            assert claim_digest(s, chat_pk, "2026-01-15", nine, claimant="dead", now=clock()) is not None
        restarted = DigestScheduler(svc, use_apscheduler=False)
        restarted.register_poster("telegram", poster)
        seen = []
        for minute in (3, 10, 17, 18, 30):
            clock.now = datetime(2026, 1, 15, 9, minute, tzinfo=UTC)
            seen.append([o.status for o in await restarted.tick()])
        return seen

    try:
        seen = run(scenario())
    finally:
        worker.stop()
    assert seen == [[], [], ["skipped"], [], []]  # 09:17: 16 minutes after the dead claim, once
    with db.session() as s:
        runs = digest_runs(s, s.scalars(select(Chat.id)).one())
        assert [(r.local_date, r.status, r.message_count) for r in runs] == [("2026-01-15", "skipped", 4)]


@pytest.mark.slow
def test_presummarized_window_answers_at_once_and_stays_in_its_chat(
    service: ChatService, ingestor: Ingestor, db: Database
) -> None:
    start = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    add_messages(ingestor, "-100777", TEAM, start)
    add_messages(
        ingestor, "-100888", [("Mallory", "The vault code is 4711"), ("Trent", "Noted.")], start, first_id=1
    )  # the same message ids in another chat
    sched = DigestScheduler(service, use_apscheduler=False)

    async def scenario() -> tuple[int, Reply]:
        made = await sched.presummarize()  # both chats' windows closed (the clock is at 12:00)
        reply = await service.handle(WHO, "summary")
        return made, reply

    made, reply = run(scenario())
    assert made == 2
    assert reply.kind == "summary" and reply.cached  # no model call: the stored summary
    assert [m.speaker for m in reply.window] == ["Alice", "Bob", "Carol", "Alice"]
    assert all("4711" not in m.text for m in reply.window)
    assert reply.refs == {1: "1", 2: "2", 3: "3", 4: "4"}
    summary = reply.summary
    assert summary is not None and summary.meta.message_count == 4
    speakers = {p.speaker for t in summary.topics for p in t.participants}
    assert speakers <= {"Alice", "Bob", "Carol"}  # grounding: never Mallory or Trent
    assert all(1 <= r <= 4 for t in summary.topics for k in t.key_points for r in k.message_refs)
    with db.session() as s:
        assert s.scalar(select(func.count(StoredSummary.id))) == 2
    assert len(service.worker.queue_waits) == 2  # two model calls in all


def test_allow_list_gates_chat_data_but_not_personal_commands(tmp_path: Path, db: Database) -> None:
    config = Config.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "d")},
            "privacy": {"allowed_chats": ["telegram:-100111", "-100222"]},
        }
    )
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
    svc = ChatService(config, db, worker)
    elsewhere = Requester("telegram", "-100999", "u1", "Una")
    try:
        for command in ("summary", "digest", "forget"):
            reply = run(svc.handle(elsewhere, command))
            assert reply.kind == "denied" and "allow-list" in reply.text
        assert "/summary" in run(svc.handle(elsewhere, "help")).text
        assert run(svc.handle(elsewhere, "optout")).text.startswith("Done")
        assert "no messages stored" in run(svc.handle(Requester("telegram", "-100222", "u1"), "summary")).text
        assert "no messages stored" in run(svc.handle(Requester("telegram", "-100111", "u1"), "summary")).text
    finally:
        worker.stop()


def test_digest_deferred_when_the_model_is_busy_gives_the_claim_back(
    tmp_path: Path, db: Database, ingestor: Ingestor
) -> None:
    config = smollm_config(tmp_path, min_new_messages=2, grace_minutes=60)
    clock = Clock(datetime(2026, 1, 15, 8, 0, tzinfo=UTC))
    worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config), max_queue=1)
    svc = ChatService(config, db, worker, ingestor=ingestor, clock=clock)
    add_messages(ingestor, "-100777", TEAM, datetime(2026, 1, 15, 7, 0, tzinfo=UTC))
    gate = threading.Event()

    async def yes() -> bool:
        return True

    async def poster(chat_id: str, thread: str | None, reply: Reply) -> None:
        raise AssertionError("nothing may be posted while the model is busy")

    async def scenario() -> list[Any]:
        await svc.handle(WHO, "digest", "09:00 UTC", is_admin=yes)
        sched = DigestScheduler(svc, use_apscheduler=False)
        sched.register_poster("telegram", poster)
        blocker = asyncio.ensure_future(worker.run(lambda e: gate.wait(60)))
        await asyncio.sleep(0.5)
        filler = asyncio.ensure_future(worker.run(lambda e: None))  # the queue (size 1) is now full
        await asyncio.sleep(0)
        clock.now = datetime(2026, 1, 15, 9, 5, tzinfo=UTC)
        outcomes = await sched.tick()
        gate.set()
        await blocker
        await filler
        return outcomes

    try:
        outcomes = run(scenario())
    finally:
        gate.set()
        worker.stop()
    assert [o.status for o in outcomes] == ["deferred"]
    with db.session() as s:
        assert digest_runs(s, s.scalars(select(Chat.id)).one()) == []  # a later tick may still post it
