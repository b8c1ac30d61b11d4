"""SIGKILL the Slack bot while messages arrive: nothing Slack saw acknowledged is lost, nothing is doubled.

The bot is the real ``chatsum run`` (HTTP mode) in a subprocess with a real SQLite file; the stand-in plays
Slack, sending signed events a few at a time. Bolt answers only after the listener committed
(``process_before_response``), so at the moment of the kill every event that got its 200 must already be
in the database. Then, as Slack does, every event that got no 200 is sent again (``X-Slack-Retry-Num``) to
the restarted bot, together with some that did — and each message ends up stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
from slack_standin import SlackStandIn

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "C0LOAD"
TOTAL = 300
KILL_AFTER = 100
PARALLEL = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_ids(db_file: Path) -> list[str]:
    """Message ids committed so far, read from outside as another process would."""
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=10) as conn:
        return [row[0] for row in conn.execute("SELECT platform_message_id FROM messages")]


async def start_bot(config: Path, env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config), "run",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )
    for _ in range(1200):  # until the HTTP endpoint accepts connections (after auth.test)
        if proc.returncode is not None:
            raise AssertionError(f"the bot exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        await asyncio.sleep(0.1)
    raise AssertionError("the bot did not start listening")


def test_sigkill_while_events_arrive_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async def scenario() -> None:
        standin = SlackStandIn()
        standin.add_user("U0ANN", "ann", "Ann")
        standin.add_user("U0BEN", "ben", "Ben")
        standin.add_channel(CHANNEL, "load", creator="U0ANN")
        await standin.start()
        port = free_port()
        db_file = tmp_path / "chatsum.db"
        config = tmp_path / "config.toml"
        config.write_text(
            f'[storage]\nurl = "sqlite:///{db_file}"\n'
            f'[slack]\nenabled = true\nmode = "http"\n'
            f'api_base_url = "{standin.api_url}"\nhttp_port = {port}\n',
            encoding="utf-8",
        )
        env = {**os.environ, "CHATSUM_SLACK_BOT_TOKEN": standin.bot_token,
               "CHATSUM_SLACK_SIGNING_SECRET": standin.signing_secret, "PYTHONPATH": str(ROOT)}
        url = f"http://127.0.0.1:{port}/slack/events"
        log = tmp_path / "bot.log"
        events = [standin.message(CHANNEL, ("U0ANN", "U0BEN")[i % 2], f"message number {i}")
                  for i in range(TOTAL)]
        proc = await start_bot(config, env, port, log)
        acked: set[str] = set()
        try:
            gate = asyncio.Semaphore(PARALLEL)

            async def deliver(event: dict[str, Any]) -> None:
                async with gate:
                    try:
                        answer = await standin.send_event(url, event, event_id=f"Ev{event['ts']}")
                    except (aiohttp.ClientError, OSError):
                        return  # no acknowledgement: Slack will retry it
                    if answer.status == 200:
                        acked.add(event["ts"])
                        if len(acked) == KILL_AFTER:
                            proc.send_signal(signal.SIGKILL)

            await asyncio.gather(*(deliver(e) for e in events))
            assert await proc.wait() == -signal.SIGKILL
            assert KILL_AFTER <= len(acked) < TOTAL
            committed = stored_ids(db_file)
            assert acked <= set(committed), "an acknowledged message was lost"

            # Slack retries what was not acknowledged, and may retry some that were.
            proc = await start_bot(config, env, port, log)
            missed = [e for e in events if e["ts"] not in acked]
            resend = missed + [e for e in events if e["ts"] in acked][:25]
            for event in resend:
                answer = await standin.send_event(url, event, event_id=f"Ev{event['ts']}", retry_num=1)
                assert answer.status == 200
            final = stored_ids(db_file)
            assert len(final) == TOTAL and set(final) == {e["ts"] for e in events}

            proc.send_signal(signal.SIGTERM)  # a clean stop, as systemd does it
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await standin.close()

    asyncio.run(scenario())
