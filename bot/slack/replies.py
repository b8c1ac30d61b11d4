"""Posting a ``Reply`` in Slack: Block Kit within Slack's limits, links to the source messages, and the
choice between an ephemeral answer (only the asker sees it) and a message for everyone.

Links are Slack's archive permalinks, built without an API call from the workspace URL that ``auth.test``
returns: ``https://<workspace>.slack.com/archives/<channel>/p<ts without the dot>``, plus
``?thread_ts=<root>&cid=<channel>`` for a thread reply — the form ``chat.getPermalink`` itself returns.
A summary cites up to dozens of messages, so one ``chat.getPermalink`` per citation would cost seconds and
rate-limit budget; it is used only when the workspace URL is unknown.

Ephemeral answers go through ``chat.postEphemeral``. Slack refuses that where the bot is not a member
(``not_in_channel``, private channels it was not invited to); then the command's ``response_url`` is
used, which works in any channel the command was typed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.render import LinkFor, SlackMessage, clean, render_slack_blocks
from bot.render.formats import SLACK_MRKDWN, SLACK_TEXT_LIMIT, pack
from bot.render.layout import Block, Line, Span
from bot.service import Reply

log = logging.getLogger(__name__)

# Errors after which the command's response_url can still reach the user.
NOT_A_MEMBER = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
MAX_PERMALINK_CALLS = 50


def archive_link(workspace_url: str, channel: str, ts: str, thread_ts: str | None = None) -> str | None:
    """The permalink of message ``ts`` (a thread reply needs its root's ``thread_ts``)."""
    if not workspace_url or not ts.replace(".", "").isdigit():
        return None
    base = workspace_url if workspace_url.endswith("/") else workspace_url + "/"
    link = f"{base}archives/{channel}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel}"
    return link


def text_messages(text: str) -> list[SlackMessage]:
    """A sentence or paragraph (help, errors) as escaped mrkdwn messages under Slack's text limit."""
    lines: list[Line] = [(Span(line),) for line in clean(text).split("\n")]
    return [{"text": chunk} for chunk in pack([Block("note", lines)], SLACK_MRKDWN, SLACK_TEXT_LIMIT)] or [
        {"text": " "}
    ]


def render_reply(reply: Reply, link_for: LinkFor | None) -> list[SlackMessage]:
    if reply.summary is not None:
        return render_slack_blocks(reply.summary, title=reply.title, link_for=link_for)
    return text_messages(reply.text)


class SlackPoster:
    """Sends replies with one Web API client; ``workspace_url`` comes from ``auth.test``."""

    def __init__(self, client: AsyncWebClient, workspace_url: str = "") -> None:
        self.client = client
        self.workspace_url = workspace_url

    async def link_for(self, channel: str, reply: Reply) -> LinkFor | None:
        """Window ref -> permalink of the message it came from (None when there is nothing to link)."""
        if reply.summary is None or not reply.refs:
            return None
        threads = {m.platform_message_id: m.thread_id for m in reply.window}
        if self.workspace_url:
            links = {ref: archive_link(self.workspace_url, channel, ts, threads.get(ts))
                     for ref, ts in reply.refs.items()}
        else:
            links = await self._permalinks(channel, reply.refs, reply.summary.model_dump())
        return links.get

    async def _permalinks(
        self, channel: str, refs: Mapping[int, str], summary: dict[str, Any]
    ) -> dict[int, str | None]:
        """``chat.getPermalink`` for the refs the summary actually cites (bounded)."""
        cited = sorted({r for r in _cited_refs(summary) if r in refs})[:MAX_PERMALINK_CALLS]

        async def one(ref: int) -> str | None:
            try:
                response = await self.client.chat_getPermalink(channel=channel, message_ts=refs[ref])
            except SlackApiError as exc:
                log.info("chat.getPermalink failed: %s", exc.response.get("error"))
                return None
            link = response.get("permalink")
            return link if isinstance(link, str) else None

        found = await asyncio.gather(*(one(r) for r in cited))
        return dict(zip(cited, found, strict=True))

    async def send(
        self,
        channel: str,
        reply: Reply,
        *,
        user: str | None = None,
        thread_ts: str | None = None,
        response_url: str | None = None,
    ) -> int:
        """Post ``reply``: ephemeral to ``user`` when given, else for everyone. Returns messages sent."""
        messages = render_reply(reply, await self.link_for(channel, reply))
        for message in messages:
            if user:
                await self._ephemeral(channel, user, message, thread_ts, response_url)
            else:
                await self._public(channel, message, thread_ts, response_url)
        return len(messages)

    async def _ephemeral(self, channel: str, user: str, message: SlackMessage, thread_ts: str | None,
                         response_url: str | None) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, **message)
        except SlackApiError as exc:
            if not response_url or exc.response.get("error") not in NOT_A_MEMBER:
                raise
            await self._respond(response_url, message, "ephemeral")

    async def _public(self, channel: str, message: SlackMessage, thread_ts: str | None,
                      response_url: str | None) -> None:
        try:
            await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, unfurl_links=False,
                                               unfurl_media=False, **message)
        except SlackApiError as exc:
            if not response_url or exc.response.get("error") not in NOT_A_MEMBER:
                raise
            await self._respond(response_url, message, "in_channel")

    async def _respond(self, response_url: str, message: SlackMessage, response_type: str) -> None:
        webhook = AsyncWebhookClient(response_url)
        response = await webhook.send(text=message.get("text"), blocks=message.get("blocks"),
                                      response_type=response_type, replace_original=False)
        if response.status_code >= 400:
            log.warning("posting to the response_url failed: HTTP %s %s", response.status_code, response.body)


def _cited_refs(data: Any) -> set[int]:
    """Every ``message_refs`` entry anywhere in a dumped summary."""
    out: set[int] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "message_refs" and isinstance(value, list):
                out.update(v for v in value if isinstance(v, int))
            else:
                out |= _cited_refs(value)
    elif isinstance(data, list):
        for item in data:
            out |= _cited_refs(item)
    return out
