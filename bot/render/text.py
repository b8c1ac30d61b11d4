"""Text hygiene and per-platform escaping for anything that came from a chat or from the model.

Chat text is untrusted twice over: people type markup on purpose (``<b>``, ``*``, ``<!channel>``) and the
model copies it. Every string that reaches a platform passes through ``clean`` and then exactly one of the
escapers below, so neither a user nor the model can inject formatting, mentions or links.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import quote, urlsplit

# Bidi embeddings/overrides/isolates can visually reorder the bot's own text around them (a spoofing
# vector); C0/C1 controls other than newline and tab break parsers. Both are removed.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_SPACE_RE = re.compile(r"\s+")

ZWSP = "\u200b"
_SLACK_FORMAT_CHARS = frozenset("*_~`")
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|<>~")


def clean(text: str | None, *, max_chars: int | None = None, single_line: bool = False) -> str:
    """Drop characters that break or spoof rendering; optionally collapse to one line and cap the length."""
    if not text:
        return ""
    text = _SURROGATE_RE.sub("\ufffd", text)
    text = text.translate(_BIDI_CONTROLS)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _SPACE_RE.sub(" ", text).strip() if single_line else text.strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)].rstrip() + "…"
    return text


def escape_html(text: str) -> str:
    """Telegram HTML: only ``<``, ``>``, ``&`` (and ``"`` inside attributes) are special."""
    return html.escape(text, quote=True)


def escape_markdown(text: str) -> str:
    """CommonMark: backslash-escape every ASCII punctuation character that can start markup."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def escape_slack(text: str) -> str:
    """Slack mrkdwn has no escape for ``* _ ~ `````; a zero-width space on each side keeps them literal.

    ``& < >`` become entities as Slack documents, which also defuses ``<@U1>``, ``<!channel>`` and
    ``<http://evil|click>``.
    """
    out: list[str] = []
    for ch in text:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch in _SLACK_FORMAT_CHARS:
            out.append(ZWSP + ch + ZWSP)
        else:
            out.append(ch)
    return "".join(out)


def safe_url(url: str | None) -> str | None:
    """Only absolute http(s) links survive; characters that end a link in any of our formats are encoded."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return quote(url, safe=":/?#[]@!$&'*+,;=%-._~")


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units (an emoji outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


_TAG_RE = re.compile(r"<[^>]*>")


def telegram_visible_length(html_text: str) -> int:
    """Length of our Telegram HTML after entity parsing: tags dropped, entities decoded, UTF-16 units.

    Valid only for HTML built by this package (every literal ``<`` in content is escaped).
    """
    return utf16_len(html.unescape(_TAG_RE.sub("", html_text)))
