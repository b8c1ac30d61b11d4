"""The Slack bot (slack-bolt): live buffering of channel messages, /summary, thread summaries, digests.

``run_slack`` is what ``chatsum run`` starts; ``bot/slack_manifest.yaml`` creates the matching Slack app.
"""

from bot.slack.adapter import SlackAdapter, SlackSetupError
from bot.slack.run import run_slack

__all__ = ["SlackAdapter", "SlackSetupError", "run_slack"]
