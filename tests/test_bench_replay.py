"""bench/replay.py: a recorded answer is replayed for the same request and only for it."""

from __future__ import annotations

from pathlib import Path

from test_summarizer import CHAT, LUNCH, RELEASE, ScriptedBackend, model

from bench.replay import RecordingBackend
from model.backends.base import Turn
from model.summarizer import Summarizer


def test_a_second_run_replays_every_answer_and_gives_the_same_summary(tmp_path: Path) -> None:
    file = tmp_path / "answers.jsonl"
    first = RecordingBackend(ScriptedBackend([model(RELEASE, LUNCH)] * 3), file)
    one = Summarizer(first).summarize(CHAT, mode="chatsum")
    assert first.recorded == 3 and first.replayed == 0

    again = RecordingBackend(ScriptedBackend([]), file)  # an empty script: any model call would fail
    two = Summarizer(again).summarize(CHAT, mode="chatsum")
    assert again.replayed == 3 and again.recorded == 0
    assert two.topics == one.topics and two.overall == one.overall


def test_a_different_request_goes_to_the_model(tmp_path: Path) -> None:
    file = tmp_path / "answers.jsonl"
    backend = RecordingBackend(ScriptedBackend(["a", "b"]), file)
    turns = [Turn("user", "hello")]
    assert backend.complete(turns, max_tokens=5).text == "a"
    assert backend.complete(turns, max_tokens=5).text == "a"  # replayed
    assert backend.complete(turns, max_tokens=6).text == "b"  # another budget: a new request
    assert (backend.recorded, backend.replayed) == (2, 1)
