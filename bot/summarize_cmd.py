"""``chatsum summarize``: pick the messages a person asked about, run the summarizer, print the result.

Kept apart from ``bot.cli`` because it is the one command that loads a model. A file is imported into a
throw-away in-memory database (nothing is persisted: summarizing an export should not silently store
it); ``--chat`` reads the configured database and stores the summary there, as the bots do.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console

from bot.config import Config
from model.schema import Summary
from model.windows import WindowMessage
from storage.db import Database

LARGE_SELECTION = 1500  # messages; beyond this we warn that map-reduce over the whole file takes a while


@dataclass(frozen=True, slots=True)
class Selection:
    chat_pk: int
    title: str
    messages: list[WindowMessage]
    what: str  # "the whole export", "the latest conversation", "the last 200 messages", ...


def select_messages(
    db: Database,
    config: Config,
    chat_ref: str | None,
    *,
    since: timedelta | datetime | None,
    last: int | None,
    whole: bool,
) -> Selection:
    """The messages to summarize. ``since`` as a timedelta counts back from the chat's newest message."""
    from bot.service import latest_window
    from storage.queries import find_chat, list_chats, load_window_messages

    with db.session() as session:
        if chat_ref is None:
            chats = list_chats(session)
            if not chats:
                raise LookupError("the export holds no messages to summarize")
            if len(chats) > 1:
                names = ", ".join(f"{c.platform_chat_id} ({c.title})" for c in chats[:10])
                raise LookupError(f"the export holds {len(chats)} chats; pick one with --chat: {names}")
            chat = find_chat(session, str(chats[0].id))
        else:
            chat = find_chat(session, chat_ref)
        if chat is None:
            raise LookupError(f"no chat {chat_ref!r}; `chatsum chats` lists the stored chats")
        title = chat.title or chat.platform_chat_id
        chat_pk = chat.id
        messages = load_window_messages(session, chat.id, last=last)
    if not messages:
        raise LookupError(f"chat {title!r} has no stored messages with text")
    if isinstance(since, timedelta):
        newest = messages[-1].sent_at
        messages = [m for m in messages if m.sent_at >= newest - since]
        what = f"the last {_span(since)} of the conversation"
    elif isinstance(since, datetime):
        cutoff = since.replace(tzinfo=None)
        messages = [m for m in messages if m.sent_at.replace(tzinfo=None) >= cutoff]
        what = f"messages since {since:%Y-%m-%d %H:%M} UTC"
    elif last is not None:
        what = f"the last {len(messages)} messages"
    elif whole:
        what = "the whole chat"
    else:
        window = latest_window(messages, config)
        messages = list(window.messages) if window else []
        what = "the latest conversation"
    if not messages:
        raise LookupError(f"no messages in {what} of {title!r}")
    return Selection(chat_pk=chat_pk, title=title, messages=messages, what=what)


def _span(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0 and secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def run_summarizer(config: Config, selection: Selection, *, mode: str, focus: str | None,
                   console: Console) -> Summary:
    """Load the back-end (joining built-in weights once) and summarize, showing progress on stderr."""
    from bot.service import to_chat_messages
    from model.backends import get_backend
    from model.summarizer import Summarizer

    if len(selection.messages) > LARGE_SELECTION:
        console.print(f"[yellow]{len(selection.messages)} messages: summarizing them all takes a while; "
                      "--last N or --since 2h narrows it.[/yellow]")

    def joined(done: int, total: int) -> None:
        status.update(f"preparing the model: {done / max(total, 1):.0%} of {total / 1e9:.1f} GB checked")

    with console.status("loading the model…") as status:
        backend = get_backend(config, progress=joined)
        status.update(f"summarizing {len(selection.messages)} messages ({selection.what}) "
                      f"with {backend.model_id}…")
        started = time.perf_counter()
        summarizer = Summarizer(backend, language=config.model.language,
                                max_new_tokens=config.model.max_new_tokens,
                                temperature=config.model.temperature,
                                candidates=config.model.candidates,
                                candidate_temperature=config.model.candidate_temperature,
                                missed_topics=config.model.missed_topics)
        summary = summarizer.summarize(to_chat_messages(selection.messages), mode=mode, focus=focus)
    console.print(f"[dim]{selection.title}: {selection.what}, {len(selection.messages)} messages, "
                  f"{backend.model_id}, {time.perf_counter() - started:.1f} s[/dim]")
    return summary


def store_summary(db: Database, chat_pk: int, messages: Sequence[WindowMessage], summary: Summary) -> None:
    """Keep a CLI summary beside the bots' ones (window bounds, model, prompt version, JSON)."""
    from storage.ingest import to_naive_utc
    from storage.models import Summary as StoredSummary

    with db.session() as session:
        session.add(StoredSummary(
            chat_id=chat_pk,
            window_start=to_naive_utc(messages[0].sent_at),
            window_end=to_naive_utc(messages[-1].sent_at),
            first_message_id=messages[0].id,
            last_message_id=messages[-1].id,
            message_count=len(messages),
            mode=summary.meta.mode,
            focus=summary.meta.focus,
            model_id=summary.meta.model_id[:256],
            prompt_version=summary.meta.prompt_version[:32],
            content=summary.model_dump(mode="json"),
        ))


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, force_terminal=None if sys.stderr.isatty() else False)


def import_to_memory(path: Path, console: Console) -> Database:
    """An in-memory database holding just this export (nothing is written to disk)."""
    from bot.importers import import_path
    from storage.ingest import Ingestor

    db = Database("sqlite://")
    report = import_path(path, Ingestor(db), progress=sys.stderr.isatty())
    if report.added == 0:
        raise LookupError(f"{path}: no messages could be read ({report.closing_line()})")
    if report.rejected:
        console.print(f"[yellow]{len(report.rejected)} entries of {path} were skipped "
                      f"(`chatsum import` lists them)[/yellow]")
    return db
