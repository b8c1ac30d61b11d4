"""Slack Block Kit output: sections of mrkdwn within Slack's limits (3000 chars a section, 50 blocks)."""

from __future__ import annotations

from typing import Any

from bot.render.formats import (
    SLACK_MAX_BLOCKS,
    SLACK_MRKDWN,
    SLACK_SECTION_LIMIT,
    _block_units,
)
from bot.render.layout import Block
from bot.render.text import escape_slack

SlackMessage = dict[str, Any]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def blocks_messages(
    blocks: list[Block], fallback: str, max_blocks: int = SLACK_MAX_BLOCKS
) -> list[SlackMessage]:
    """Layout blocks into Slack messages; a topic's sections stay in one message where they fit."""
    groups: list[list[dict[str, Any]]] = []
    for i, block in enumerate(blocks):
        group = [_section(u) for u in _block_units(block, SLACK_MRKDWN, SLACK_SECTION_LIMIT)]
        if i < len(blocks) - 1 and block.kind == "topic":
            group.append({"type": "divider"})
        groups.append(group)
    messages: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for group in groups:
        if len(current) + len(group) <= max_blocks:
            current += group
            continue
        if current:
            messages.append(current)
            current = []
        while len(group) > max_blocks:  # a topic with more than 50 sections: cut it, nothing else to do
            messages.append(group[:max_blocks])
            group = group[max_blocks:]
        current = group
    if current:
        messages.append(current)
    for m in messages:  # a trailing divider is noise
        while m and m[-1]["type"] == "divider":
            m.pop()
    total = len(messages)
    text = escape_slack(fallback)
    return [
        {"text": text if total == 1 else f"{text} ({n}/{total})", "blocks": m}
        for n, m in enumerate(messages, 1)
    ]
