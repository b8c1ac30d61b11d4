"""Rendering: structure, links, escaping against hostile chat text, and splitting under platform limits."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from bot.render import (
    escape_slack,
    render_markdown,
    render_plain_text,
    render_slack_blocks,
    render_slack_mrkdwn,
    render_telegram_html,
    telegram_message_link,
    telegram_text,
    telegram_visible_length,
    utf16_len,
)
from bot.render.text import ZWSP, clean
from model.schema import ActionItem, KeyPoint, ParticipantView, Summary, SummaryMeta, Topic

EVIL = "<b>bold</b> & *star* _under_ `tick` ~strike~ <@U1> <!channel> <https://evil.example|click> [x](y)"
ODD = "a\u202eRTL\u202c z\u200bw e\u0301 🎉👍🏽 中文 \x00nul \ud800lone"


def make_summary(text: str = "plain", topics: int = 2, points: int = 2, mode: str = "chatsum") -> Summary:
    return Summary(
        topics=[
            Topic(
                title=f"Topic {t} {text}",
                participants=[
                    ParticipantView(speaker=f"Alice {text}", view=f"wants the release on Friday {text}"),
                    ParticipantView(speaker="Bob", view=f"objects {text}"),
                ],
                key_points=[
                    KeyPoint(text=f"point {t}.{k} {text}", message_refs=[k + 1, k + 2]) for k in range(points)
                ],
                decisions=[KeyPoint(text=f"ship it {text}", message_refs=[1])],
                action_items=[
                    ActionItem(text=f"write notes {text}", owner=f"Carol {text}", message_refs=[2])
                ],
            )
            for t in range(1, topics + 1)
        ],
        overall=f"The team agreed on Friday {text}.",
        meta=SummaryMeta(mode=mode, message_count=12, focus="release date" if mode == "aspect" else None),
    )


def tg_link(ref: int) -> str | None:
    return telegram_message_link("-1001234567890", 100 + ref)


class _TagChecker(HTMLParser):
    """Collects tags and checks nesting, the way Telegram's entity parser would refuse bad HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)
        self.tags.append(tag)
        self.hrefs += [v or "" for k, v in attrs if k == "href"]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text += data


def check_html(chunk: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(chunk)
    checker.close()
    assert not checker.stack, f"unclosed tags {checker.stack}"
    assert set(checker.tags) <= {"b", "i", "a"}
    return checker


# -- structure and links ------------------------------------------------------------------------------


def test_telegram_html_has_every_part_with_links() -> None:
    chunks = render_telegram_html(make_summary(), link_for=tg_link)
    assert len(chunks) == 1
    out = check_html(chunks[0])
    parts = ("Topic 1 plain", "Topic 2 plain", "Alice plain", "wants the release", "point 2.1 plain",
             "Decisions",
             "ship it", "Action items", "Carol plain", "write notes", "Overall", "12 messages")
    for part in parts:
        assert part in out.text
    assert "https://t.me/c/1234567890/101" in out.hrefs
    assert all(h.startswith("https://t.me/c/1234567890/") for h in out.hrefs)
    assert out.text.index("Topic 1") < out.text.index("Topic 2") < out.text.index("Overall")


def test_message_links_only_where_telegram_has_them() -> None:
    assert telegram_message_link("-1001234567890", 42) == "https://t.me/c/1234567890/42"
    assert telegram_message_link("-123456", 42) is None  # basic group: no links exist
    assert telegram_message_link("-1001", "x") is None
    assert telegram_message_link("-100123", 5, username="@team") == "https://t.me/team/5"


def test_without_links_markdown_shows_refs_and_other_formats_show_nothing() -> None:
    md = MarkdownIt("commonmark").render(render_markdown(make_summary()))
    assert "<em>(#1, #2)</em>" in md
    html_out = render_telegram_html(make_summary())[0]
    assert "<a " not in html_out and "#1" not in html_out


def test_aspect_mode_shows_focus_and_empty_summary_says_so() -> None:
    out = check_html(render_telegram_html(make_summary(mode="aspect"))[0]).text
    assert "Focused summary" in out and "release date" in out
    empty = check_html(render_telegram_html(Summary())[0]).text
    assert "Nothing worth summarizing" in empty


def test_slack_outputs_link_with_permalinks() -> None:
    def permalink(ref: int) -> str:
        return f"https://acme.slack.com/archives/C1/p17000000{ref:02d}000100"

    text = render_slack_mrkdwn(make_summary(), link_for=permalink)[0]
    assert "<https://acme.slack.com/archives/C1/p1700000001000100|[1]>" in text
    msgs = render_slack_blocks(make_summary(), link_for=permalink)
    assert len(msgs) == 1 and msgs[0]["text"] == "Summary"
    json.dumps(msgs)  # serialisable as posted
    assert all(b["type"] in {"section", "divider"} for b in msgs[0]["blocks"])
    assert msgs[0]["blocks"][-1]["type"] != "divider"


def test_unsafe_link_schemes_are_dropped() -> None:
    out = render_telegram_html(make_summary(), link_for=lambda r: "javascript:alert(1)")[0]
    assert "javascript" not in out and "<a " not in out
    s = render_slack_mrkdwn(make_summary(), link_for=lambda r: "https://x.example/a|b>c")[0]
    assert "https://x.example/a%7Cb%3Ec|[1]>" in s


# -- escaping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [EVIL, ODD, EVIL + ODD])
def test_telegram_html_escapes_hostile_text(payload: str) -> None:
    plain = check_html(render_telegram_html(make_summary())[0])
    for chunk in render_telegram_html(make_summary(payload), link_for=tg_link):
        out = check_html(chunk)
        assert out.tags.count("b") == plain.tags.count("b")  # no bold injected by "<b>"
        assert all(h.startswith("https://t.me/c/") for h in out.hrefs)  # no link injected
        if payload is EVIL:
            assert "<b>bold</b> & *star*" in out.text  # shown literally
    joined = "".join(render_telegram_html(make_summary(payload)))
    assert "\u202e" not in joined and "\x00" not in joined
    joined.encode("utf-8")  # no lone surrogate survives


def _unprotected_format_chars(text: str) -> str:
    """Slack formatting characters not neutralised by zero-width spaces on both sides."""
    stripped = re.sub(f"{ZWSP}[*_~`]{ZWSP}", "", text)
    stripped = re.sub(r"<https?://[^|>]*\|", "<", stripped)  # our own link URLs may hold '_'
    return "".join(ch for ch in stripped if ch in "*_~`")


@pytest.mark.parametrize("payload", [EVIL, ODD])
def test_slack_mrkdwn_escapes_hostile_text(payload: str) -> None:
    twin = render_slack_mrkdwn(make_summary("plain"))[0]
    out = render_slack_mrkdwn(make_summary(payload))[0]
    assert _unprotected_format_chars(out) == _unprotected_format_chars(twin)
    for bad in ("<@U1>", "<!channel>", "<https://evil", "<b>"):
        assert bad not in out
    assert "&lt;@U1&gt;" in out or payload is ODD
    blocks_text = json.dumps(render_slack_blocks(make_summary(payload)))
    assert "<!channel>" not in blocks_text and "<@U1>" not in blocks_text


def test_markdown_escapes_hostile_text() -> None:
    md = MarkdownIt("commonmark")
    plain_html = md.render(render_markdown(make_summary("plain")))
    evil_html = md.render(render_markdown(make_summary(EVIL)))
    for tag in ("<strong>", "<em>", "<a ", "<code>", "<b>"):
        assert evil_html.count(tag) == plain_html.count(tag), tag
    assert "&lt;b&gt;bold&lt;/b&gt;" in evil_html


def test_plain_text_shows_chat_text_as_typed_with_the_markdown_layout() -> None:
    """The terminal format: the Markdown document's lines, with "v1.2 (beta)" as typed, not escaped."""
    summary = make_summary("v1.2 (beta) *x*")
    plain = render_plain_text(summary)
    markdown = render_markdown(summary)
    assert "wants the release on Friday v1.2 (beta) *x*" in plain
    assert "\\" not in plain and "**" not in plain
    assert "v1\\.2" in markdown  # the Markdown document does escape it
    assert plain.count("\n") == markdown.count("\n")
    assert render_plain_text(make_summary(ODD)).count("\u202e") == 0  # still cleaned of bidi overrides
    linked = render_plain_text(summary, link_for=tg_link)
    assert "<https://t.me/c/1234567890/101>" in linked


def test_escape_slack_defuses_mentions() -> None:
    assert escape_slack("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_clean_removes_spoofing_and_controls_but_keeps_text() -> None:
    assert clean("a\u202eb\x00c\x07d") == "abcd"
    assert clean("  multi\n  line  ", single_line=True) == "multi line"
    assert clean("x" * 50, max_chars=10) == "x" * 9 + "…"
    assert clean("中文 🎉") == "中文 🎉"


# -- splitting ----------------------------------------------------------------------------------------


def _topic_of(chunk: str) -> list[str]:
    return re.findall(r"<b>(\d+)\. Topic", chunk)


def test_telegram_split_keeps_topics_whole() -> None:
    long = "word " * 60
    summary = make_summary(long, topics=12, points=4)
    chunks = render_telegram_html(summary, link_for=tg_link)
    assert len(chunks) > 1
    seen: list[str] = []
    for chunk in chunks:
        assert telegram_visible_length(chunk) <= 4096
        check_html(chunk)
        for n in _topic_of(chunk):
            # the whole topic, through its action item, is in the same message as its title
            start = chunk.index(f"<b>{n}. Topic")
            assert "write notes" in chunk[start:]
            seen.append(n)
    assert seen == [str(i) for i in range(1, 13)]
    assert "(continued)" not in "".join(chunks)


def test_oversized_topic_is_split_with_continuation_and_utf16_counts() -> None:
    emoji_text = "🎉" * 900  # 900 characters but 1800 UTF-16 units each
    summary = Summary(topics=[Topic(title="Huge", key_points=[KeyPoint(text=emoji_text) for _ in range(8)])])
    chunks = render_telegram_html(summary)
    assert len(chunks) >= 4
    for chunk in chunks:
        check_html(chunk)
        assert telegram_visible_length(chunk) <= 4096
    assert "<b>Summary</b>" in chunks[0] and "1. Huge" in chunks[0]
    assert "Huge (continued)" in chunks[1]
    total_points = sum(c.count("🎉" * 100) // 9 for c in chunks)
    assert total_points == 8  # nothing lost


def test_slack_blocks_respect_section_and_block_limits() -> None:
    amp = "&" * 999  # each becomes '&amp;' (5 chars): a single line far above 3000 chars
    summary = Summary(topics=[Topic(title=f"T{i}", key_points=[KeyPoint(text=amp)] * 3) for i in range(30)])
    msgs = render_slack_blocks(summary)
    assert len(msgs) > 1
    for m in msgs:
        assert len(m["blocks"]) <= 50
        for b in m["blocks"]:
            if b["type"] == "section":
                assert len(b["text"]["text"]) <= 3000
    text = "".join(b["text"]["text"] for m in msgs for b in m["blocks"] if b["type"] == "section")
    assert text.count("&amp;") == 999 * 3 * 30  # nothing lost in the cuts
    for chunk in render_slack_mrkdwn(summary, limit=5000):
        assert len(chunk) <= 5000


def test_telegram_text_splits_and_escapes() -> None:
    chunks = telegram_text(("<b>x</b> & y\n" * 600).strip())
    assert len(chunks) >= 2
    for c in chunks:
        assert telegram_visible_length(c) <= 4096
        assert "<b>" not in c
    assert html.unescape("".join(chunks)).count("<b>x</b>") == 600


def test_utf16_len_counts_astral_characters_twice() -> None:
    assert utf16_len("a🎉中") == 4


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=8), st.integers(200, 4096))
def test_any_text_gives_valid_html_under_limit(texts: list[str], limit: int) -> None:
    summary = Summary(
        topics=[Topic(title=t[:50], participants=[ParticipantView(speaker=t[:20] or "x", view=t)],
                      key_points=[KeyPoint(text=t, message_refs=[1])]) for t in texts],
        overall=texts[0],
    )
    for chunk in render_telegram_html(summary, link_for=tg_link, limit=limit):
        check_html(chunk)
        assert telegram_visible_length(chunk) <= limit
