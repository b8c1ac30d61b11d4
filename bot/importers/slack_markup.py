"""Slack's message markup (``<@U123>``, ``<#C1|name>``, ``<https://…|label>``, ``<!here>``) as readable text.

A summary quoting "<@U024BE7LH> asked about <#C1>" is useless to a reader, so references are resolved to
names from ``users.json`` / ``channels.json`` at import time. Slack escapes only ``&``, ``<`` and ``>``;
those are unescaped after the markup is replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"<([^<>\n]*)>")
_SPECIAL = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}


def _unescape(text: str) -> str:
    if "&" not in text:
        return text
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render(text: str, users: Mapping[str, str], channels: Mapping[str, str]) -> str:
    """Replace every ``<…>`` reference with what a person would read there."""
    if "<" not in text:
        return _unescape(text)

    def token(match: re.Match[str]) -> str:
        body = match.group(1)
        target, _, label = body.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            return "@" + (users.get(uid) or label or uid)
        if target.startswith("#"):
            cid = target[1:]
            return "#" + (channels.get(cid) or label or cid)
        if target.startswith("!"):
            command = target[1:]
            if command in _SPECIAL:
                return _SPECIAL[command]
            if command.startswith("subteam^"):
                return label or "@" + command.partition("^")[2]
            if command.startswith("date^"):
                return label or command
            return label or "@" + command
        url = _unescape(target)
        if url.startswith("mailto:"):
            return _unescape(label) if label else url[len("mailto:"):]
        if label and _unescape(label) != url:
            return f"{_unescape(label)} ({url})"
        return url

    parts: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        parts.append(_unescape(text[last:match.start()]))
        parts.append(token(match))
        last = match.end()
    parts.append(_unescape(text[last:]))
    return "".join(parts)
