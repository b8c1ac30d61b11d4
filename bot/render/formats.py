"""Formatters over the neutral layout, and the one splitting rule shared by every platform.

Splitting keeps whole blocks (a topic) in one message where they fit; a block larger than a message is
cut at line boundaries and its title is repeated with "(continued)"; a single line larger than a message
(only possible with pathological escaping) is cut between characters, never inside markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.render.layout import Block, Line, Span
from bot.render.text import escape_html, escape_markdown, escape_slack, telegram_visible_length

TELEGRAM_LIMIT = 4096
SLACK_TEXT_LIMIT = 40_000
SLACK_SECTION_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
SLACK_MAX_BLOCKS = 50


@dataclass(frozen=True, slots=True)
class Formatter:
    """How one platform writes a span, joins lines and blocks, and measures a message against its limit."""

    escape: Callable[[str], str]
    bold: tuple[str, str]
    italic: tuple[str, str]
    link: Callable[[str, str], str]  # (escaped text, url) -> markup
    measure: Callable[[str], int]
    line_sep: str = "\n"
    block_sep: str = "\n\n"

    def span(self, s: Span) -> str:
        text = self.escape(s.text)
        if not text:
            return ""
        if s.href:
            text = self.link(text, s.href)
        if s.style == "bold":
            return self.bold[0] + text + self.bold[1]
        if s.style == "italic":
            return self.italic[0] + text + self.italic[1]
        return text

    def line(self, line: Line) -> str:
        return "".join(self.span(s) for s in line)


TELEGRAM_HTML = Formatter(
    escape=escape_html,
    bold=("<b>", "</b>"),
    italic=("<i>", "</i>"),
    link=lambda text, url: f'<a href="{escape_html(url)}">{text}</a>',
    measure=telegram_visible_length,
)

SLACK_MRKDWN = Formatter(
    escape=escape_slack,
    bold=("*", "*"),
    italic=("_", "_"),
    link=lambda text, url: f"<{url}|{text}>",
    measure=len,
)

MARKDOWN = Formatter(
    escape=escape_markdown,
    bold=("**", "**"),
    italic=("*", "*"),
    link=lambda text, url: f"[{text}]({url})",
    measure=len,
    line_sep="  \n",  # a hard line break; a bare newline would merge lines into one paragraph
)


PLAIN_TEXT = Formatter(
    # For a terminal: nothing is markup there, so nothing is escaped (layout has already cleaned every
    # span of controls and bidi overrides); a chat's "v1.2 (beta)" prints as typed.
    escape=lambda text: text,
    bold=("", ""),
    italic=("", ""),
    link=lambda text, url: f"{text} <{url}>",
    measure=len,
)


def _cut_line(line: Line, fmt: Formatter, limit: int) -> list[str]:
    """Hard-cut one over-long line into formatted pieces that each fit, splitting span text, not markup."""
    pieces: list[str] = []
    current = ""
    for span in line:
        rest = span.text
        while rest:
            room_text = fmt.span(Span(rest, span.style, span.href))
            if fmt.measure(current + room_text) <= limit:
                current += room_text
                break
            lo, hi = 0, len(rest)  # the longest prefix that still fits beside `current`
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fmt.measure(current + fmt.span(Span(rest[:mid], span.style, span.href))) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                if not current:  # even one character cannot fit: give up on this span's remainder
                    break
                pieces.append(current)
                current = ""
                continue
            current += fmt.span(Span(rest[:lo], span.style, span.href))
            pieces.append(current)
            current = ""
            rest = rest[lo:]
    if current:
        pieces.append(current)
    return pieces


def _block_units(block: Block, fmt: Formatter, limit: int, first_limit: int | None = None) -> list[str]:
    """A block as one or more texts, each within ``limit``; more than one only when the block is too big.

    ``first_limit`` caps the first text only, for a block that begins in a partly filled message.
    """
    lines: list[str] = []
    for line in block.lines:
        text = fmt.line(line)
        lines.extend([text] if fmt.measure(text) <= limit else _cut_line(line, fmt, limit))
    whole = fmt.line_sep.join(lines)
    if fmt.measure(whole) <= (limit if first_limit is None else first_limit):
        return [whole]
    cont = fmt.line((Span(block.title + " (continued)", "bold"),)) if block.title else ""
    units: list[str] = []
    current = ""
    for i, text in enumerate(lines):
        candidate = text if not current else current + fmt.line_sep + text
        cap = first_limit if (first_limit is not None and not units) else limit
        if fmt.measure(candidate) <= cap:
            current = candidate
            continue
        if current or not units:
            units.append(current)
        head = cont if (cont and i > 0) else ""
        joined = head + fmt.line_sep + text if head else text
        current = joined if fmt.measure(joined) <= limit else text
    if current:
        units.append(current)
    return units


def pack(blocks: list[Block], fmt: Formatter, limit: int) -> list[str]:
    """Blocks into as few messages as fit, never splitting a block that fits in a message of its own.

    A block too big for any message is cut as few times as possible; it shares a message with what came
    before only when that adds no cut.
    """
    messages: list[str] = []
    current = ""
    for block in blocks:
        units = _block_units(block, fmt, limit)
        if len(units) == 1:
            candidate = units[0] if not current else current + fmt.block_sep + units[0]
            if current and fmt.measure(candidate) > limit:
                messages.append(current)
                current = units[0]
            else:
                current = candidate
            continue
        if current:
            # Start the block beside what is already there when that costs no extra cut.
            room = limit - fmt.measure(current + fmt.block_sep)
            glued = _block_units(block, fmt, limit, first_limit=room) if room > 0 else []
            if glued and glued[0] and len(glued) <= len(units):
                messages.append(current + fmt.block_sep + glued[0])
                units = glued[1:]
            else:
                messages.append(current)
        messages.extend(units[:-1])
        current = units[-1]
    if current:
        messages.append(current)
    return messages
