"""Rendering of a ``model.schema.Summary`` for people: Markdown, Telegram HTML, Slack mrkdwn and blocks.

Pure functions, no I/O. Links to source messages come from a ``link_for(ref)`` callable supplied by the
platform adapter (Telegram builds t.me links, Slack passes permalinks), so this package knows nothing
about chats or storage.
"""

from __future__ import annotations

from bot.render.formats import (
    MARKDOWN,
    PLAIN_TEXT,
    SLACK_MRKDWN,
    SLACK_TEXT_LIMIT,
    TELEGRAM_HTML,
    TELEGRAM_LIMIT,
    Formatter,
    pack,
)
from bot.render.layout import MODE_TITLES, Block, Line, LinkFor, Span, layout
from bot.render.slack_blocks import SlackMessage, blocks_messages
from bot.render.text import (
    clean,
    escape_html,
    escape_markdown,
    escape_slack,
    telegram_visible_length,
    utf16_len,
)
from model.schema import Summary

__all__ = [
    "SLACK_TEXT_LIMIT",
    "TELEGRAM_LIMIT",
    "LinkFor",
    "SlackMessage",
    "clean",
    "escape_html",
    "escape_markdown",
    "escape_slack",
    "render_markdown",
    "render_plain_text",
    "render_slack_blocks",
    "render_slack_mrkdwn",
    "render_telegram_html",
    "telegram_message_link",
    "telegram_text",
    "telegram_visible_length",
    "utf16_len",
]


def _document(
    summary: Summary, fmt: Formatter, title: str | None, link_for: LinkFor | None, show_refs: bool
) -> str:
    blocks = layout(summary, title=title, link_for=link_for, show_refs=show_refs)
    return fmt.block_sep.join(fmt.line_sep.join(fmt.line(line) for line in b.lines) for b in blocks) + "\n"


def render_markdown(
    summary: Summary, *, title: str | None = None, link_for: LinkFor | None = None, show_refs: bool = True
) -> str:
    """One Markdown document (files, ``--format md``); without links the window refs show as ``(#3, #7)``."""
    return _document(summary, MARKDOWN, title, link_for, show_refs)


def render_plain_text(
    summary: Summary, *, title: str | None = None, link_for: LinkFor | None = None, show_refs: bool = True
) -> str:
    """The same document without markup, for a terminal: Markdown's escapes (``1\\.2``) would show there."""
    return _document(summary, PLAIN_TEXT, title, link_for, show_refs)


def render_telegram_html(
    summary: Summary,
    *,
    title: str | None = None,
    link_for: LinkFor | None = None,
    limit: int = TELEGRAM_LIMIT,
) -> list[str]:
    """Messages for ``parse_mode=HTML``, each under ``limit`` characters after entity parsing."""
    return pack(layout(summary, title=title, link_for=link_for), TELEGRAM_HTML, limit)


def render_slack_mrkdwn(
    summary: Summary,
    *,
    title: str | None = None,
    link_for: LinkFor | None = None,
    limit: int = SLACK_TEXT_LIMIT,
) -> list[str]:
    """Plain mrkdwn messages (for ``text`` without blocks), each under Slack's 40k-character limit."""
    return pack(layout(summary, title=title, link_for=link_for), SLACK_MRKDWN, limit)


def render_slack_blocks(
    summary: Summary, *, title: str | None = None, link_for: LinkFor | None = None
) -> list[SlackMessage]:
    """``{"text": fallback, "blocks": [...]}`` messages within 50 blocks and 3000 chars per section."""
    blocks = layout(summary, title=title, link_for=link_for)
    fallback = clean(title, single_line=True) if title else MODE_TITLES.get(summary.meta.mode, "Summary")
    return blocks_messages(blocks, fallback)


def telegram_text(text: str, *, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """A plain sentence or paragraph (help, errors) as escaped HTML messages under the limit."""
    lines: list[Line] = [(Span(line),) for line in clean(text).split("\n")]
    return pack([Block("note", lines)], TELEGRAM_HTML, limit) or [""]


def telegram_message_link(
    chat_id: str | int, message_id: str | int, username: str | None = None
) -> str | None:
    """A t.me link to a message where Telegram has one: public chats by username, supergroups by id.

    Basic groups (ids not starting with -100) and private chats have no message links.
    """
    mid = str(message_id)
    if not mid.isdigit():
        return None
    if username:
        return f"https://t.me/{username.lstrip('@')}/{mid}"
    cid = str(chat_id)
    if cid.startswith("-100") and cid[4:].isdigit():
        return f"https://t.me/c/{cid[4:]}/{mid}"
    return None
