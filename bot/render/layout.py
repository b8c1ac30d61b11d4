"""A platform-neutral layout of a ``Summary``: blocks of lines of styled spans.

Every output format (Markdown, Telegram HTML, Slack mrkdwn, Slack blocks) is a formatter over this one
layout, so the wording, the ordering and the splitting rules are decided once. A *block* is the unit
we try not to cut across messages (the header, one topic, the overall summary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bot.render.text import clean, safe_url
from model.schema import KeyPoint, Summary, Topic

LinkFor = Callable[[int], str | None]
"""Maps a window ``ref`` (1-based) to a URL of the source message, or None where the platform has none."""

Style = Literal["plain", "bold", "italic"]

# Field caps keep any single line far below the smallest per-unit limit (Slack's 3000-char section),
# so splitting at line boundaries always suffices. The model's schema asks for much less anyway.
MAX_TITLE = 200
MAX_TEXT = 1000
MAX_NAME = 80
MAX_LINKS_PER_POINT = 5

NOTHING_FOUND = "Nothing worth summarizing was found in these messages."

MODE_TITLES = {
    "chatsum": "Summary",
    "overall": "Summary",
    "user": "What the customer asked",
    "agent": "What the agent did",
    "all": "Support conversation",
    "aspect": "Focused summary",
}


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    style: Style = "plain"
    href: str | None = None


Line = tuple[Span, ...]


@dataclass(slots=True)
class Block:
    kind: Literal["header", "topic", "overall", "note"]
    lines: list[Line] = field(default_factory=list)
    title: str = ""  # for topics: repeated, marked "(continued)", when a topic must be split


def _refs_spans(refs: list[int], link_for: LinkFor | None, show_refs: bool) -> list[Span]:
    """Source links after a point: numbered links where the platform has URLs, bare refs otherwise."""
    out: list[Span] = []
    seen: list[int] = []
    for r in refs:
        if r not in seen:
            seen.append(r)
    if link_for is not None:
        links = [(r, safe_url(link_for(r))) for r in seen]
        linked = [(r, u) for r, u in links if u][:MAX_LINKS_PER_POINT]
        for i, (_r, url) in enumerate(linked):
            out.append(Span(" "))
            out.append(Span(f"[{i + 1}]", href=url))
        if linked:
            return out
    if show_refs and seen:
        out.append(Span(" "))
        out.append(Span("(" + ", ".join(f"#{r}" for r in seen[:MAX_LINKS_PER_POINT]) + ")", "italic"))
    return out


def _point_line(point: KeyPoint, link_for: LinkFor | None, show_refs: bool, prefix: str = "• ") -> Line:
    spans = [Span(prefix), Span(clean(point.text, max_chars=MAX_TEXT, single_line=True))]
    spans += _refs_spans(point.message_refs, link_for, show_refs)
    return tuple(spans)


def topic_block(topic: Topic, index: int, link_for: LinkFor | None, show_refs: bool) -> Block:
    title = clean(topic.title, max_chars=MAX_TITLE, single_line=True) or f"Topic {index}"
    lines: list[Line] = [(Span(f"{index}. {title}", "bold"),)]
    for p in topic.participants:
        view = clean(p.view, max_chars=MAX_TEXT, single_line=True)
        if not view:
            continue
        name = clean(p.speaker, max_chars=MAX_NAME, single_line=True) or "someone"
        lines.append((Span("• "), Span(name, "bold"), Span(": " + view)))
    if topic.key_points:
        lines.append((Span("Key points", "italic"),))
        lines += [_point_line(k, link_for, show_refs) for k in topic.key_points if clean(k.text)]
    if topic.decisions:
        lines.append((Span("Decisions", "italic"),))
        lines += [_point_line(d, link_for, show_refs, "✔ ") for d in topic.decisions if clean(d.text)]
    if topic.action_items:
        lines.append((Span("Action items", "italic"),))
        for a in topic.action_items:
            text = clean(a.text, max_chars=MAX_TEXT, single_line=True)
            if not text:
                continue
            spans = [Span("☐ ")]
            owner = clean(a.owner, max_chars=MAX_NAME, single_line=True)
            if owner:
                spans += [Span(owner, "bold"), Span(": ")]
            spans.append(Span(text))
            spans += _refs_spans(a.message_refs, link_for, show_refs)
            lines.append(tuple(spans))
    return Block("topic", lines, title=f"{index}. {title}")


def layout(
    summary: Summary,
    *,
    title: str | None = None,
    link_for: LinkFor | None = None,
    show_refs: bool = False,
) -> list[Block]:
    """The summary as blocks: header, one block per topic, then the overall sentence(s)."""
    meta = summary.meta
    heading = MODE_TITLES.get(meta.mode, "Summary")
    if title:
        heading = clean(title, max_chars=MAX_TITLE, single_line=True)
    header: list[Line] = [(Span(heading, "bold"),)]
    if meta.mode == "aspect" and meta.focus:
        focus = clean(meta.focus, max_chars=MAX_TITLE, single_line=True)
        header.append((Span("Focus: ", "italic"), Span(focus)))
    if meta.message_count:
        header.append((Span(f"{meta.message_count} messages", "italic"),))
    blocks = [Block("header", header)]
    for i, topic in enumerate(summary.topics, 1):
        blocks.append(topic_block(topic, i, link_for, show_refs))
    overall = clean(summary.overall, max_chars=MAX_TEXT * 3)
    if overall:
        lines: list[Line] = [(Span("Overall", "bold"),)]
        lines += [(Span(part),) for part in overall.split("\n") if part.strip()]
        blocks.append(Block("overall", lines))
    if not summary.topics and not overall:
        blocks.append(Block("note", [(Span(NOTHING_FOUND, "italic"),)]))
    return blocks
