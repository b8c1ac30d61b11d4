"""Load on the live bots: many chats at a steady rate, ingest latency, and ``/summary`` under that load.

    nice -n 19 python bench/bot_load.py                       # 50 chats, 200 msg/s, 60 s, Telegram + Slack
    python bench/bot_load.py --chats 5 --rate 20 --duration 10                      # a quick look
    python bench/bot_load.py --platforms telegram --rate 400 --summary-every 5      # one platform, harder

What runs. The bot is its own process, as ``chatsum run`` is: the real PTB ``Application`` (long polling,
our store-then-confirm update loop) and the real Bolt ``AsyncApp`` in Socket Mode, sharing one
``ChatService``, one ``ModelWorker`` and the APScheduler digest scheduler, on a real SQLite file in a
temporary directory, with the real SmolLM2-135M (llama.cpp, ``n_threads=1``) as the summarizer; the
model is loaded before the load starts. This process plays the platforms: the Telegram Bot API stand-in
(``tests/tg_standin.py``, an aiohttp server in a thread) and the Slack Web API + Socket Mode stand-in
(``tests/slack_standin.py``). Chats are split round-robin over the platforms; each replays one of the
English conversations of ``bench/chats/quality`` (real sentences, replies, 3–5 speakers) in a loop.
The total ``--rate`` is spread evenly: message k is due at ``t0 + k/rate`` and goes to chat ``k mod
chats``, so every chat sends at ``rate/chats`` per second, and the chats are out of phase.

What is measured, and how.

* **Offered** time: this process stamps (``time.time()``) each message when it becomes available to the
  bot: appended to the stand-in's ``getUpdates`` queue (the stand-in's long poll here wakes on arrival,
  as Telegram's does, instead of checking every 20 ms), or just before its Socket Mode envelope is sent.
* **Committed** time: the bot process wraps the real ``storage.ingest.Ingestor`` (the one ingest path of
  both adapters) and stamps each ``ingest_one`` when it returns, i.e. after the commit. Both stamps are
  wall-clock times on the same machine. **Ingest latency** = committed - offered; **sustained
  msgs/s** = messages committed while the load ran / its duration, with the backlog left when it ended
  and how long the bot took to drain it. A bot that keeps up shows ingested ~ offered, a flat latency
  over the ``timeline`` and a drain of well under a second.
* **Exactly once**: after the drain, the stored rows are compared with what was offered: lost (offered,
  not stored), unexpected, duplicate rows, and how many messages the ingestor saw more than once.
* **/summary**: every ``--summary-every`` seconds one of ``--summary-chats`` chats (both platforms) gets
  ``/summary`` from a new asker (so only the per-chat rate limit can refuse). Per command: **queue wait**
  = the model worker picking the job up - the command offered (this includes reaching the bot, loading
  the window from SQLite and the jobs ahead of it in the bounded queue; ``ModelWorker.queue_waits``, the
  time inside the queue only, is reported beside it); **time to answer** = the answer posted to the
  stand-in (Telegram: the "Summarizing…" placeholder edited; Slack: ``chat.postEphemeral``) - offered;
  ``busy`` answers (queue full or a rate limit: "I'm busy right now — please try again in N s") are
  counted apart. A job is matched to its command by its chat (from the message ids it summarizes) and
  order. The bench waits up to ``--answer-timeout`` s after the load for the answers.
* **Machine**: CPU count, load average before and after, peak RSS and CPU seconds of the bot process
  (and of its model thread) and of this process (the stand-ins and the load generator share the cores).

Results go to ``bench/results/bot_load.json`` (``--out``) and a Markdown table is printed. On this 2-core
machine the stand-ins, the load generator and the model all compete with the adapters for the same two
cores; run it on an otherwise idle machine before quoting figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the platform stand-ins live with the tests

RESULTS = Path(__file__).resolve().parent / "results" / "bot_load.json"
SCRIPTS = Path(__file__).resolve().parent / "chats" / "quality"
TELEGRAM_TOKEN = "123456:LOAD-bench-token"
MODEL: dict[str, Any] = {"model": "smollm2-135m", "n_ctx": 4096, "n_threads": 1}
BUSY_MARK = "busy right now"
SUMMARY_MARK = "Summary of"


# == the bot process ======================================================================================


@dataclass
class BotRecord:
    """What the bot process writes down while it runs (lists appended from several threads)."""

    ingested: list[tuple[str, str, str, float, int, int]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (wall time, process CPU seconds)
    model_load_s: float = 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bot_process(spec_path: str) -> None:
    """The bot side: both adapters as ``chatsum run`` starts them, with timing taps on ingest and model."""
    import logging

    from bot.config import Secrets, parse_config
    from storage.db import Database

    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING)
    config = parse_config(spec["config"])
    db = Database(config.database_url)
    record = BotRecord()
    done = threading.Event()

    def sample_cpu() -> None:  # one sample a second: lets the parent take the CPU of the load window only
        while not done.is_set():
            record.cpu.append((time.time(), _cpu_seconds()))
            done.wait(1.0)

    sampler = threading.Thread(target=sample_cpu, name="cpu-sampler", daemon=True)
    sampler.start()
    queue_waits: list[float] = []
    try:
        asyncio.run(_serve(config, Secrets.from_env(), db, record, queue_waits))
    finally:
        done.set()
        record.cpu.append((time.time(), _cpu_seconds()))
        db.dispose()
        out = {
            "ingested": record.ingested,
            "jobs": record.jobs,
            "queue_waits": queue_waits,
            "cpu": record.cpu,
            "model_load_s": record.model_load_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        Path(spec["out"]).write_text(json.dumps(out))


async def _serve(config: Any, secrets: Any, db: Any, record: BotRecord, queue_waits: list[float]) -> None:
    from bot.run_cmd import run_all
    from bot.service import ChatService, make_engine
    from bot.worker import ModelWorker
    from storage.ingest import IncomingMessage, Ingestor, IngestResult

    class TimedIngestor(Ingestor):
        """The real ingestor; stamps each message once its transaction has committed."""

        def ingest_one(self, msg: IncomingMessage) -> IngestResult:
            result = super().ingest_one(msg)
            record.ingested.append((msg.platform, msg.chat_id, msg.message_id, time.time(),
                                    result.added, result.duplicates))
            return result

    class TimedEngine:
        """The real summarizer; notes when the worker ran each job and what it summarized."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def summarize(self, messages: list[Any], mode: str = "chatsum", focus: str | None = None) -> Any:
            cpu = time.thread_time()
            job: dict[str, Any] = {
                "start": time.time(), "end": None, "thread_cpu_s": None, "messages": len(messages),
                "mode": mode, "first_id": messages[0].message_id if messages else None,
                "last_id": messages[-1].message_id if messages else None,
            }
            record.jobs.append(job)  # noted at the start: a job still running at the end was picked up
            try:
                return self.inner.summarize(messages, mode=mode, focus=focus)
            finally:
                job["end"], job["thread_cpu_s"] = time.time(), time.thread_time() - cpu

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    worker: ModelWorker[Any] = ModelWorker(lambda: TimedEngine(make_engine(config)))
    started = time.perf_counter()
    await asyncio.to_thread(worker.engine)  # load before the load starts: measure serving, not loading
    record.model_load_s = time.perf_counter() - started
    service = ChatService(config, db, worker, ingestor=TimedIngestor(db))
    try:  # exactly what ``chatsum run`` does (adapters, digest scheduler, signals, shutdown)
        await run_all(config, secrets, db, service=service)
    finally:
        queue_waits.extend(worker.queue_waits)


# == the platform side ====================================================================================


def _stand_in_classes() -> tuple[type, type]:
    """The test stand-ins with the arrival of the bot's answers stamped, and a long poll that wakes on
    arrival (Telegram answers a waiting ``getUpdates`` at once; the test stand-in checks every 20 ms)."""
    from slack_standin import SlackStandIn
    from tg_standin import TelegramStandIn

    class TimedTelegram(TelegramStandIn):  # type: ignore[misc]
        confirmed_below: int  # the base class's, declared for type checkers that cannot see tests/
        _updates: list[dict[str, Any]]

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.answers: list[tuple[float, str, dict[str, Any], Any]] = []
            self._wakeup: asyncio.Event | None = None

        def push_update(self, payload: dict[str, Any]) -> int:
            update_id: int = super().push_update(payload)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake)
            return update_id

        def _wake(self) -> None:
            if self._wakeup is not None:
                self._wakeup.set()

        async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
            offset = int(params.get("offset") or 0)
            limit = int(params.get("limit") or 100)
            deadline = time.monotonic() + float(params.get("timeout") or 0)
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            while True:
                self._wakeup.clear()
                with self._lock:  # as the test stand-in: asking with offset N confirms every update below N
                    if offset > self.confirmed_below:
                        self.confirmed_below = offset
                        self._updates = [u for u in self._updates if u["update_id"] >= offset]
                    ready = [u for u in self._updates if u["update_id"] >= offset][:limit]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    return ready
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)

        async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
            result = await super()._m_sendMessage(params)
            self.answers.append((time.time(), "send", params, result))
            return result

        async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
            result = await super()._m_editMessageText(params)
            self.answers.append((time.time(), "edit", params, result))
            return result

    class TimedSlack(SlackStandIn):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.answers: list[tuple[float, str, dict[str, Any]]] = []

        def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
            self.answers.append((time.time(), "ephemeral", dict(args)))
            result: dict[str, Any] = super()._m_chat_postEphemeral(args)
            return result

        def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
            self.answers.append((time.time(), "message", dict(args)))
            result: dict[str, Any] = super()._m_chat_postMessage(args)
            return result

    return TimedTelegram, TimedSlack


@dataclass
class Script:
    title: str
    messages: list[dict[str, Any]]


def load_scripts() -> list[Script]:
    """The English benchmark conversations (real sentences, replies), replayed by the load's chats."""
    scripts = []
    for path in sorted(SCRIPTS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("language") == "en":
            scripts.append(Script(str(data["title"]), list(data["messages"])))
    if not scripts:
        raise SystemExit(f"no English chats found in {SCRIPTS}")
    return scripts


@dataclass
class LoadChat:
    index: int
    platform: str
    chat_id: str
    script: Script
    position: int = 0
    sent_ids: dict[int, str] = field(default_factory=dict)  # script message id -> platform message id

    def next_line(self) -> dict[str, Any]:
        line = self.script.messages[self.position % len(self.script.messages)]
        self.position += 1
        return line


@dataclass
class Command:
    platform: str
    chat_id: str
    asker: str
    offered: float
    message_id: str = ""  # Telegram: the command message; Slack: empty
    acked: float | None = None
    error: str = ""


@dataclass
class Load:
    """Everything the platform side offered, with when."""

    offered: dict[tuple[str, str, str], float] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    slack_errors: list[str] = field(default_factory=list)
    t0: float = 0.0
    t_end: float = 0.0


def telegram_chat(chat: LoadChat) -> dict[str, Any]:
    return {"id": int(chat.chat_id), "type": "supergroup", "title": chat.script.title}


class Generator:
    """Offers messages at a steady total rate and ``/summary`` commands at a fixed period."""

    def __init__(self, args: argparse.Namespace, chats: list[LoadChat], telegram: Any, slack: Any) -> None:
        self.args = args
        self.chats = chats
        self.telegram = telegram
        self.slack = slack
        self.load = Load()
        self.summary_chats = chats[: max(0, min(args.summary_chats, len(chats)))]
        self._next_tg_id = 1  # Telegram message ids unique across chats: a job's ids name its chat
        self._tg_users: dict[str, dict[str, Any]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def _tg_user(self, name: str) -> dict[str, Any]:
        user = self._tg_users.get(name)
        if user is None:
            user = {"id": 5_000_000 + len(self._tg_users), "is_bot": False, "first_name": name}
            self._tg_users[name] = user
        return user

    @staticmethod
    def slack_user(name: str) -> str:
        return "U" + "".join(ch for ch in name.upper() if ch.isalnum())[:10]

    def _offer_message(self, chat: LoadChat) -> None:
        line = chat.next_line()
        if chat.platform == "telegram":
            mid = self._next_tg_id
            self._next_tg_id += 1
            reply = None
            if line.get("reply_to") in chat.sent_ids:
                reply = {"message_id": int(chat.sent_ids[line["reply_to"]]), "date": int(time.time()),
                         "chat": telegram_chat(chat), "text": "…"}
            self.load.offered[("telegram", chat.chat_id, str(mid))] = time.time()
            self.telegram.push_message(telegram_chat(chat), self._tg_user(line["speaker"]), line["text"],
                                       mid, reply_to=reply)
            chat.sent_ids[int(line["id"])] = str(mid)
        else:
            event = self.slack.message(chat.chat_id, self.slack_user(line["speaker"]), line["text"])
            chat.sent_ids[int(line["id"])] = event["ts"]
            self._spawn(self._push_slack(chat, event))

    async def _push_slack(self, chat: LoadChat, event: dict[str, Any]) -> None:
        self.load.offered[("slack", chat.chat_id, event["ts"])] = time.time()
        try:
            await self.slack.push("events_api", self.slack.event_callback(event), timeout=300)
        except Exception as exc:  # an ack that never came: the message may still be stored (checked later)
            self.load.slack_errors.append(f"{event['ts']}: {exc!r}")

    def _offer_command(self, j: int) -> None:
        chat = self.summary_chats[j % len(self.summary_chats)]
        if chat.platform == "telegram":
            mid = self._next_tg_id
            self._next_tg_id += 1
            asker = {"id": 9_000_000 + j, "is_bot": False, "first_name": f"Asker{j}"}
            command = Command("telegram", chat.chat_id, str(asker["id"]), time.time(), str(mid))
            self.load.commands.append(command)
            self.telegram.push_message(telegram_chat(chat), asker, self.args.summary_text, mid)
        else:
            uid = f"UASK{j:05d}"
            self.slack.add_user(uid, f"asker{j}", f"Asker {j}")
            self._spawn(self._push_slack_command(chat, uid))

    async def _push_slack_command(self, chat: LoadChat, uid: str) -> None:
        text = self.args.summary_text.partition(" ")[2]
        payload = self.slack.command_payload("/summary", user=uid, channel=chat.chat_id, text=text)
        command = Command("slack", chat.chat_id, uid, time.time())
        self.load.commands.append(command)
        try:
            await self.slack.push("slash_commands", payload, timeout=300)
            command.acked = time.time()
        except Exception as exc:
            command.error = repr(exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def run(self) -> None:
        """The steady schedule: message k at t0 + k/rate to chat k mod chats; catches up if late."""
        args = self.args
        total = int(args.rate * args.duration)
        commands_due: list[float] = []
        if self.summary_chats and args.summary_every > 0:
            count = int(args.duration / args.summary_every)
            commands_due = [args.summary_every * (n + 1) for n in range(count)]
        start = time.perf_counter()
        self.load.t0 = time.time()
        k = j = 0
        while k < total or j < len(commands_due):
            elapsed = time.perf_counter() - start
            while k < total and k / args.rate <= elapsed:
                self._offer_message(self.chats[k % len(self.chats)])
                k += 1
            while j < len(commands_due) and commands_due[j] <= elapsed:
                self._offer_command(j)
                j += 1
            upcoming = [k / args.rate if k < total else args.duration]
            if j < len(commands_due):
                upcoming.append(commands_due[j])
            next_due = min(upcoming)
            await asyncio.sleep(max(0.0, min(next_due - (time.perf_counter() - start), 0.05)))
        self.load.t_end = max(time.time(), self.load.t0 + args.duration)

    async def wait_acks(self, timeout: float) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)


# == analysis =============================================================================================


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def spread(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {"n": len(values), "p50": r(pct(values, 50)), "p95": r(pct(values, 95)),
            "p99": r(pct(values, 99)), "max": r(max(values) if values else None),
            "mean": r(sum(values) / len(values) if values else None)}


def ingest_stats(load: Load, committed: dict[tuple[str, str, str], float], platform_name: str | None) -> dict:
    keys = [k for k in load.offered if platform_name is None or k[0] == platform_name]
    duration = load.t_end - load.t0
    latencies = [committed[k] - load.offered[k] for k in keys if k in committed]
    in_window = sum(1 for k in keys if k in committed and committed[k] <= load.t_end)
    offered_in_window = sum(1 for k in keys if load.offered[k] <= load.t_end)
    last = max((committed[k] for k in keys if k in committed), default=load.t_end)
    return {
        "offered": len(keys),
        "offered_msgs_per_s": round(offered_in_window / duration, 1) if duration else None,
        "ingested_msgs_per_s": round(in_window / duration, 1) if duration else None,
        "backlog_at_end": offered_in_window - in_window,
        "drain_s": round(max(0.0, last - load.t_end), 3),
        "latency_s": spread(latencies),
    }


def timeline(load: Load, committed: dict[tuple[str, str, str], float]) -> list[dict[str, Any]]:
    """Per second of the load: offered, committed, and p99 latency of the messages offered then."""
    seconds = int(load.t_end - load.t0 + 0.999)
    offered = [0] * seconds
    done = [0] * (seconds + 1)
    lat: list[list[float]] = [[] for _ in range(seconds)]
    for key, t in load.offered.items():
        s = min(seconds - 1, max(0, int(t - load.t0)))
        offered[s] += 1
        if key in committed:
            lat[s].append(committed[key] - t)
            done[min(seconds, max(0, int(committed[key] - load.t0)))] += 1
    return [{"second": s, "offered": offered[s], "committed": done[s],
             "p99_latency_s": None if not lat[s] else round(pct(lat[s], 99) or 0.0, 4)}
            for s in range(seconds)]


def summary_stats(load: Load, bot: dict[str, Any], telegram: Any, slack: Any,
                  chat_of: dict[str, tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each command with its job (queue wait) and its answer (time to answer, busy or not)."""
    jobs = sorted(bot["jobs"], key=lambda jb: jb["start"])
    waits = bot["queue_waits"]
    if len(waits) == len(jobs):  # both in the order the worker started the jobs
        for job, wait in zip(jobs, waits, strict=True):
            job["enqueued"] = job["start"] - wait
            job["worker_queue_wait_s"] = wait
    for job in jobs:
        job["chat"] = chat_of.get(str(job.get("last_id")))
    used: set[int] = set()
    answers = _answers(telegram, slack)
    placeholders = _placeholders(telegram)
    rows = []
    for cmd in sorted(load.commands, key=lambda c: c.offered):
        row: dict[str, Any] = {"platform": cmd.platform, "chat": cmd.chat_id,
                               "at_s": round(cmd.offered - load.t0, 3), "kind": "unanswered"}
        answer = answers.get((cmd.platform, cmd.message_id or cmd.asker))
        first = cmd.acked if cmd.platform == "slack" else placeholders.get(cmd.message_id)
        if first is not None:  # Slack: the command's ack (due within 3 s); Telegram: "Summarizing…" shown
            row["first_response_s"] = round(first - cmd.offered, 3)
        if answer is not None:
            row["time_to_answer_s"] = round(answer[0] - cmd.offered, 3)
            text = answer[1]
            row["kind"] = "busy" if BUSY_MARK in text else "summary" if SUMMARY_MARK in text else "other"
            if row["kind"] == "other":
                row["text"] = text[:200]
        for i, job in enumerate(jobs if row["kind"] != "busy" else []):  # a busy answer ran no job
            if i in used or job["chat"] != (cmd.platform, cmd.chat_id) or job["start"] < cmd.offered:
                continue
            if job.get("enqueued", job["start"]) < cmd.offered:
                continue
            if answer is not None and (job["end"] is None or job["end"] > answer[0] + 1):
                break  # that job answered a later command
            used.add(i)
            row["queue_wait_s"] = round(job["start"] - cmd.offered, 3)
            row["worker_queue_wait_s"] = job.get("worker_queue_wait_s")
            if job["end"] is not None:
                row["model_s"] = round(job["end"] - job["start"], 3)
            row["window_messages"] = job["messages"]
            break
        if row["kind"] == "summary" and "model_s" not in row:
            row["kind"] = "summary (stored)"
        if cmd.error:
            row["error"] = cmd.error
        rows.append(row)
    out: dict[str, Any] = {}
    for name in (None, "telegram", "slack"):
        sel = [r for r in rows if name is None or r["platform"] == name]
        if name is not None and not sel:
            continue
        out[name or "all"] = {
            "sent": len(sel),
            **{kind: sum(1 for r in sel if r["kind"] == kind)
               for kind in ("summary", "summary (stored)", "busy", "other", "unanswered")},
            "queue_wait_s": spread([r["queue_wait_s"] for r in sel if "queue_wait_s" in r], 3),
            "worker_queue_wait_s": spread([r["worker_queue_wait_s"] for r in sel
                                           if r.get("worker_queue_wait_s") is not None], 3),
            "time_to_answer_s": spread([r["time_to_answer_s"] for r in sel
                                        if r["kind"].startswith("summary")], 3),
            "first_response_s": spread([r["first_response_s"] for r in sel if "first_response_s" in r], 3),
            "busy_answer_s": spread([r["time_to_answer_s"] for r in sel if r["kind"] == "busy"], 3),
            "model_s": spread([r["model_s"] for r in sel if "model_s" in r], 3),
        }
    out["jobs_total"] = len(jobs)
    out["jobs_unmatched"] = len(jobs) - len(used)  # background pre-summaries, digests
    return rows, out


def _placeholders(telegram: Any) -> dict[str, float]:
    """When the "Summarizing…" placeholder answering each Telegram command (by its message id) was sent."""
    out: dict[str, float] = {}
    for t, kind, params, _result in list(telegram.answers) if telegram is not None else []:
        reply = (params.get("reply_parameters") or {}).get("message_id")
        if kind == "send" and params.get("text") == "Summarizing…" and reply is not None:
            out.setdefault(str(reply), t)
    return out


def _answers(telegram: Any, slack: Any) -> dict[tuple[str, str], tuple[float, str]]:
    """The first answer to each command: Telegram by the placeholder's reply-to, Slack by the asker."""
    out: dict[tuple[str, str], tuple[float, str]] = {}
    if telegram is not None:
        placeholder_of: dict[int, str] = {}
        for t, kind, params, result in list(telegram.answers):
            if kind == "send":
                reply = (params.get("reply_parameters") or {}).get("message_id")
                if params.get("text") == "Summarizing…" and reply is not None:
                    placeholder_of[int(result["message_id"])] = str(reply)
                elif reply is not None:
                    out.setdefault(("telegram", str(reply)), (t, str(result.get("text", ""))))
            else:
                command = placeholder_of.get(int(params["message_id"]))
                if command is not None:
                    out.setdefault(("telegram", command), (t, str(result.get("text", ""))))
    if slack is not None:
        for t, _kind, args in list(slack.answers):
            user = args.get("user")
            if user and str(user).startswith("UASK"):
                out.setdefault(("slack", str(user)), (t, str(args.get("text", ""))))
    return out


def stored_keys(db_url: str) -> list[tuple[str, str, str]]:
    from sqlalchemy import select

    from storage.db import Database
    from storage.models import Chat, Message

    db = Database(db_url, migrate=False)
    try:
        with db.session() as s:
            rows = s.execute(select(Chat.platform, Chat.platform_chat_id, Message.platform_message_id)
                             .join(Message, Message.chat_id == Chat.id)).all()
        return [(str(a), str(b), str(c)) for a, b, c in rows]
    finally:
        db.dispose()


def exactly_once(load: Load, stored: list[tuple[str, str, str]],
                 bot: dict[str, Any]) -> dict[str, int]:
    offered = set(load.offered)
    stored_set = set(stored)
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    for platform_name, chat, mid, *_ in bot["ingested"]:
        seen[(platform_name, chat, mid)] += 1
    return {
        "offered": len(offered),
        "stored": len(stored),
        "lost": len(offered - stored_set),
        "unexpected": len(stored_set - offered),
        "duplicate_rows": len(stored) - len(stored_set),
        "ingested_more_than_once": sum(1 for k in offered if seen.get(k, 0) > 1),
    }


def _cpu_between(samples: list[list[float]], t0: float, t1: float) -> float | None:
    """CPU seconds a process used between two wall times, from its once-a-second samples."""
    before = [c for w, c in samples if w <= t0]
    after = [c for w, c in samples if w >= t1]
    a, b = (before[-1] if before else None), (after[0] if after else None)
    return None if a is None or b is None else round(b - a, 2)


# == the run ==============================================================================================


def make_chats(args: argparse.Namespace, scripts: list[Script]) -> list[LoadChat]:
    chats = []
    for i in range(args.chats):
        platform_name = args.platforms[i % len(args.platforms)]
        chat_id = str(-1002000000000 - i) if platform_name == "telegram" else f"C0LOAD{i:05d}"
        chats.append(LoadChat(i, platform_name, chat_id, scripts[i % len(scripts)]))
    return chats


def bot_config(args: argparse.Namespace, data_dir: Path, telegram: Any, slack: Any) -> dict[str, Any]:
    return {
        "storage": {"data_dir": str(data_dir)},
        "model": {"backend": "llama_cpp", "max_new_tokens": args.max_new_tokens,
                  "llama_cpp": {**MODEL, "model": args.model, "n_threads": args.threads}},
        "telegram": {"enabled": True, "api_base_url": telegram.base_url} if telegram is not None else {},
        "slack": {"enabled": slack is not None, "mode": "socket",
                  "api_base_url": slack.api_url if slack is not None else "https://slack.com/api/"},
    }


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    from bot.config import parse_config
    from storage.db import Database

    TimedTelegram, TimedSlack = _stand_in_classes()
    chats = make_chats(args, load_scripts())
    telegram = TimedTelegram(token=TELEGRAM_TOKEN).start() if "telegram" in args.platforms else None
    slack = None
    if "slack" in args.platforms:
        slack = TimedSlack()
        await slack.start()
        for chat in chats:
            if chat.platform == "slack":
                speakers = sorted({m["speaker"] for m in chat.script.messages})
                for name in speakers:
                    slack.add_user(Generator.slack_user(name), name.lower(), name)
                creator = Generator.slack_user(speakers[0])
                slack.add_channel(chat.chat_id, f"load-{chat.index}", creator=creator)
    tmp = tempfile.TemporaryDirectory(prefix="chatsum-bot-load-")
    data_dir = Path(tmp.name)
    config = parse_config(bot_config(args, data_dir, telegram, slack))
    Database(config.database_url).dispose()  # migrated before the bot starts, as the operator's would be
    spec_path, out_path = data_dir / "spec.json", data_dir / "bot.json"
    spec_path.write_text(json.dumps({"config": config.model_dump(mode="json"), "out": str(out_path)}))
    env = {**os.environ, "CHATSUM_TELEGRAM_TOKEN": TELEGRAM_TOKEN}
    if slack is not None:
        env.update(CHATSUM_SLACK_BOT_TOKEN=slack.bot_token, CHATSUM_SLACK_APP_TOKEN=slack.app_token)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--bot-process", str(spec_path)],
                            cwd=ROOT, env=env)
    generator = Generator(args, chats, telegram, slack)
    try:
        await _wait_ready(proc, telegram, slack, timeout=args.start_timeout)
        await asyncio.sleep(1.0)
        cpu_before = _cpu_seconds()
        print(f"load: {args.chats} chats on {'+'.join(args.platforms)}, {args.rate:g} msg/s for "
              f"{args.duration:g} s, /summary every {args.summary_every:g} s", file=sys.stderr)
        await generator.run()
        load = generator.load
        cpu_load = _cpu_seconds() - cpu_before
        drained_at = await _wait_drained(generator, telegram, args.drain_timeout, proc)
        await _wait_answers(load, telegram, slack, args.answer_timeout, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if telegram is not None:
            telegram.stop()
        if slack is not None:
            await slack.close()
    loadavg_after = [round(x, 2) for x in os.getloadavg()]
    if not out_path.exists():
        raise SystemExit(f"the bot process wrote no results (exit code {proc.returncode})")
    bot = json.loads(out_path.read_text())
    stored = stored_keys(config.database_url)
    tmp.cleanup()

    committed: dict[tuple[str, str, str], float] = {}
    for platform_name, chat, mid, t, *_ in bot["ingested"]:
        committed.setdefault((platform_name, chat, mid), t)
    chat_of = {mid: (p, c) for (p, c, mid) in load.offered}
    commands, summary = summary_stats(load, bot, telegram, slack, chat_of)
    ingest = {"all": ingest_stats(load, committed, None)}
    for name in args.platforms:
        ingest[name] = ingest_stats(load, committed, name)
    model_cpu = sum(j["thread_cpu_s"] or 0.0 for j in bot["jobs"])
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k not in ("bot_process", "out")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_before": loadavg_before, "loadavg_after": loadavg_after,
                    "niceness": os.nice(0)},
        "bot_process": {
            "peak_rss_mib": round(bot["peak_rss_mib"], 1),
            "model_load_s": round(bot["model_load_s"], 2),
            "cpu_s_during_load": _cpu_between(bot["cpu"], load.t0, load.t_end),
            "model_thread_cpu_s_all_jobs": round(model_cpu, 2),
        },
        "bench_process": {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                          "cpu_s_during_load": round(cpu_load, 2)},
        "duration_s": round(load.t_end - load.t0, 2),
        "drained_after_s": None if drained_at is None else round(drained_at - load.t_end, 3),
        "ingest": ingest,
        "exactly_once": exactly_once(load, stored, bot),
        "slack_unacked": len(load.slack_errors),
        "summary": summary,
        "commands": commands,
        "timeline": timeline(load, committed),
    }


async def _wait_ready(proc: subprocess.Popen[bytes], telegram: Any, slack: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the bot process exited during start-up (exit code {proc.returncode})")
        tg_ready = telegram is None or bool(telegram.calls_of("getUpdates"))
        slack_ready = slack is None or slack._socket_ready.is_set()
        if tg_ready and slack_ready:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the bot did not connect within {timeout:.0f} s")


async def _wait_drained(generator: Generator, telegram: Any, timeout: float,
                        proc: subprocess.Popen[bytes]) -> float | None:
    """Every Slack envelope acknowledged and every Telegram update confirmed (both only after commit)."""
    deadline = time.monotonic() + timeout
    await generator.wait_acks(timeout)
    while time.monotonic() < deadline and proc.poll() is None:
        if telegram is None or telegram.pending_updates() == 0:
            return time.time()
        await asyncio.sleep(0.05)
    return None


async def _wait_answers(load: Load, telegram: Any, slack: Any, timeout: float,
                        proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        answers = _answers(telegram, slack)
        if all((c.platform, c.message_id or c.asker) in answers for c in load.commands):
            return
        await asyncio.sleep(0.25)


# == report ===============================================================================================


def _f(x: float | None, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return "—" if x is None else fmt.format(x * scale)


def markdown(result: dict[str, Any]) -> str:
    m, b = result["machine"], result["bot_process"]
    args = result["args"]
    lines = [
        f"bot_load: {args['chats']} chats ({'+'.join(args['platforms'])}), target {args['rate']:g} msg/s "
        f"for {result['duration_s']:g} s; {m['cpus']} CPUs, load average {m['loadavg_before']} -> "
        f"{m['loadavg_after']}, niceness {m['niceness']}",
        "",
        "| platform | offered msg/s | ingested msg/s | latency p50 | p95 | p99 | max | backlog at end "
        "| drain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["ingest"].items():
        lat = s["latency_s"]
        lines.append(
            f"| {name} | {_f(s['offered_msgs_per_s'])} | {_f(s['ingested_msgs_per_s'])} | "
            f"{_f(lat['p50'], 1000)} ms | {_f(lat['p95'], 1000)} ms | {_f(lat['p99'], 1000)} ms | "
            f"{_f(lat['max'], 1000)} ms | {s['backlog_at_end']} | {_f(s['drain_s'], fmt='{:.2f}')} s |")
    e = result["exactly_once"]
    lines += ["", f"exactly once: {e['stored']} stored of {e['offered']} offered; lost {e['lost']}, "
                  f"unexpected {e['unexpected']}, duplicate rows {e['duplicate_rows']}, ingested more than "
                  f"once {e['ingested_more_than_once']}; Slack envelopes without ack "
                  f"{result['slack_unacked']}",
              "",
              "| /summary | sent | answered | stored | busy | error/other | none | queue wait p50 / p95 | "
              "in-queue p50 / p95 | time to answer p50 / p95 | model p50 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["summary"].items():
        if not isinstance(s, dict):
            continue
        q, w, a, mo = s["queue_wait_s"], s["worker_queue_wait_s"], s["time_to_answer_s"], s["model_s"]
        lines.append(
            f"| {name} | {s['sent']} | {s['summary']} | {s['summary (stored)']} | {s['busy']} | "
            f"{s['other']} | "
            f"{s['unanswered']} | {_f(q['p50'])} / {_f(q['p95'])} s | {_f(w['p50'])} / {_f(w['p95'])} s | "
            f"{_f(a['p50'])} / {_f(a['p95'])} s | {_f(mo['p50'])} s |")
    firsts = [f"{name} {_f(s['first_response_s']['p50'], fmt='{:.2f}')} / "
              f"{_f(s['first_response_s']['max'], fmt='{:.2f}')} s"
              for name, s in result["summary"].items() if name != "all" and isinstance(s, dict)]
    if firsts:
        lines += ["", "first response to /summary, p50 / max (Telegram: the placeholder shown; Slack: the "
                      "command acknowledged, which Slack needs within 3 s): " + ", ".join(firsts)]
    lines += ["", f"bot process: peak RSS {b['peak_rss_mib']:.0f} MiB, CPU {b['cpu_s_during_load']} s during "
                  f"the load (model thread {b['model_thread_cpu_s_all_jobs']} s over all jobs), model load "
                  f"{b['model_load_s']} s; bench process (stand-ins + generator): peak RSS "
                  f"{result['bench_process']['peak_rss_mib']:.0f} MiB, CPU "
                  f"{result['bench_process']['cpu_s_during_load']} s during the load"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--chats", type=int, default=50, help="chats sending at once (default 50)")
    p.add_argument("--rate", type=float, default=200.0, help="total messages per second (default 200)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--platforms", default="telegram,slack",
                   help="comma-separated: telegram, slack or both (default); chats alternate between them")
    p.add_argument("--summary-every", type=float, default=10.0,
                   help="seconds between /summary commands during the load (0: none; default 10)")
    p.add_argument("--summary-chats", type=int, default=4,
                   help="how many chats take turns asking /summary (default 4)")
    p.add_argument("--summary-text", default="/summary", help="the command sent (default '/summary')")
    p.add_argument("--model", default=MODEL["model"],
                   help="llama.cpp model name or .gguf (default smollm2-135m)")
    p.add_argument("--threads", type=int, default=MODEL["n_threads"], help="llama.cpp threads (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--answer-timeout", type=float, default=600.0,
                   help="seconds to wait after the load for /summary answers (default 600)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    p.add_argument("--bot-process", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bot_process:
        return args
    args.platforms = [x.strip() for x in str(args.platforms).split(",") if x.strip()]
    unknown = set(args.platforms) - {"telegram", "slack"}
    if unknown or not args.platforms:
        p.error(f"--platforms takes telegram and/or slack, not {sorted(unknown) or 'nothing'}")
    if args.chats < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--chats, --rate and --duration must be positive")
    if args.chats < len(args.platforms):
        p.error(f"--chats must be at least {len(args.platforms)} for {len(args.platforms)} platforms")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bot_process:
        bot_process(args.bot_process)
        return
    result = asyncio.run(run_load(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(markdown(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
