"""Training-data builders: the bot's own prompts, one record per role, opted-out text never trained on."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finetune.cli import app
from finetune.data import (
    DataError,
    InstructionRecord,
    LabelCache,
    finalize,
    read_records,
    records_from_chats,
    records_from_file,
    split_of,
    write_dataset,
    write_records,
)
from model.backends.base import Completion, Turn
from model.prompts import build_turns
from model.schema import KeyPoint, ParticipantView, Summary, Topic
from model.tokens import estimate_tokens
from storage.db import Database
from storage.ingest import IncomingMessage, Ingestor
from storage.models import Summary as StoredSummary
from storage.retention import set_opt_out

SAMSUM = [
    {
        "id": "s1",
        "dialogue": "Anna: Lunch at 12?\nBen: Yes, the usual place.\nAnna: Great",
        "summary": "Anna and Ben will have lunch at 12 at the usual place.",
    },
    {
        "id": "s2",
        "dialogue": "Carl: Did you send the report?\nDana: Not yet, tonight.",
        "summary": "Dana will send Carl the report tonight.",
    },
    {
        "id": "s3",
        "dialogue": "Eve: Movie on Friday?\nFinn: Sure!\nEve: I'll buy tickets",
        "summary": "Eve and Finn will see a movie on Friday; Eve buys the tickets.",
    },
]
ROLE = {
    "id": "c1",
    "dialogue": [
        {"speaker": "用户", "text": "我的订单还没到"},
        {"speaker": "客服", "text": "您好，我帮您查一下物流"},
        {"speaker": "用户", "text": "好的谢谢"},
        {"speaker": "客服", "text": "明天会送到"},
    ],
    "user_summary": "用户询问订单为什么还没到。",
    "agent_summary": "客服查询物流后告知明天送到。",
    "final_summary": "用户询问订单物流，客服告知明天送到。",
}


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _turns(rec: InstructionRecord) -> list[tuple[str, str]]:
    return list(rec.prompt)


def test_samsum_records_use_the_inference_prompt_without_examples(tmp_path: Path) -> None:
    records = records_from_file(_jsonl(tmp_path / "samsum.jsonl", SAMSUM), "overall", source="samsum")
    assert [r.mode for r in records] == ["overall"] * 3
    first = records[0]
    expected = build_turns(list(first.messages), "overall", "en", few_shot=False)
    assert _turns(first) == [(t.role, t.content) for t in expected]
    assert first.completion == SAMSUM[0]["summary"]
    assert "[1] Anna: Lunch at 12?" in first.prompt[-1][1]
    row = first.to_json()
    assert row["completion"] == [{"role": "assistant", "content": SAMSUM[0]["summary"]}]
    assert [t["role"] for t in row["prompt"]] == ["system", "user"]


def test_role_data_yields_one_record_per_role(tmp_path: Path) -> None:
    records = records_from_file(_jsonl(tmp_path / "csds.jsonl", [ROLE]), "role", source="csds")
    assert sorted(r.mode for r in records) == ["agent", "all", "user"]
    assert len({r.group for r in records}) == 1  # one dialogue: they split together
    by_mode = {r.mode: r for r in records}
    assert by_mode["user"].completion == ROLE["user_summary"]
    assert by_mode["agent"].completion == ROLE["agent_summary"]
    assert by_mode["all"].completion == ROLE["final_summary"]
    for mode, rec in by_mode.items():
        want = build_turns(list(rec.messages), mode, "zh", few_shot=False)
        assert _turns(rec) == [(t.role, t.content) for t in want]
    # The role instructions differ per record, the chat is the same.
    assert len({r.prompt[0][1] for r in records}) == 3
    assert len({r.prompt[1][1] for r in records}) == 3  # the task line after the chat differs too


def test_role_kind_refuses_data_without_role_summaries(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="role data needs user, agent and final summaries"):
        records_from_file(_jsonl(tmp_path / "s.jsonl", SAMSUM[:1]), "role")


def test_aspect_data_from_topic_turns_and_documents(tmp_path: Path) -> None:
    rows = [
        {
            "id": "t1",
            "topic": "delivery",
            "summary": "The parcel arrives tomorrow.",
            "turns": [{"role": "Ann", "text": "Where is my parcel?"}, {"role": "Bob", "text": "Tomorrow."}],
        },
        {
            "id": "d1",
            "aspect": "budget",
            "summary": "The budget is 5k.",
            "document": "The plan covers the venue.\n\nThe budget is 5k in total.",
        },
    ]
    records = records_from_file(_jsonl(tmp_path / "aspect.jsonl", rows), "aspect")
    assert [r.mode for r in records] == ["aspect", "aspect"]
    assert [r.focus for r in records] == ["delivery", "budget"]
    assert "Focus: delivery" in records[0].prompt[-1][1]
    assert [m.speaker for m in records[1].messages] == ["Document", "Document"]
    with pytest.raises(DataError, match=r"aspect\.jsonl:1: aspect data needs a non-empty 'summary'"):
        records_from_file(_jsonl(tmp_path / "aspect.jsonl", [{"aspect": "x", "document": "y"}]), "aspect")


def test_finalize_dedups_filters_and_splits_deterministically(tmp_path: Path) -> None:
    many = [
        {
            "id": f"m{i}",
            "dialogue": f"Pat: message number {i}\nSam: ok {i}",
            "summary": f"Pat sent message {i}.",
        }
        for i in range(40)
    ]
    long_one = {"id": "long", "dialogue": "Pat: " + "word " * 900, "summary": "Pat wrote a lot of words."}
    dup = dict(many[0], id="m0-copy")  # same chat, another id: a duplicate
    empty = {"id": "e", "dialogue": "Pat: hi", "summary": "ok"}
    records = records_from_file(_jsonl(tmp_path / "d.jsonl", [*many, long_one, dup, empty]), "overall")
    records += records_from_file(_jsonl(tmp_path / "r.jsonl", [ROLE]), "role")
    data = finalize(records, val_fraction=0.25, seed=7, max_tokens=400, count_tokens=_estimate)
    c = data.counts
    assert (c["read"], c["duplicates"], c["too_long"], c["target_too_short"]) == (46, 1, 1, 1)
    assert c["train"] + c["validation"] == 43 and c["validation"] > 0 and c["train"] > 0
    # Same input in another order: the same split. Role records of a dialogue stay together.
    again = finalize(
        list(reversed(records)), val_fraction=0.25, seed=7, max_tokens=400, count_tokens=_estimate
    )
    assert {r.id for r in again.validation} == {r.id for r in data.validation}
    where = {r.id: split for split, recs in (("t", data.train), ("v", data.validation)) for r in recs}
    role_ids = [r.id for r in records if r.group.endswith(":c1")]
    assert len(role_ids) == 3 and len({where[i] for i in role_ids}) == 1
    assert all(
        where[r.id] == ("v" if split_of(r.group, val_fraction=0.25, seed=7) == "validation" else "t")
        for r in records
        if r.id in where
    )
    # Written and read back unchanged.
    write_dataset(data, tmp_path / "out")
    back = read_records(tmp_path / "out" / "train.jsonl")
    assert [(r.id, r.prompt, r.completion) for r in back] == [
        (r.id, r.prompt, r.completion) for r in data.train
    ]
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["counts"]["too_long"] == 1 and len(report["sha256"]["train"]) == 64


def _estimate(rec: InstructionRecord) -> int:
    return sum(estimate_tokens(c) for _, c in rec.prompt) + estimate_tokens(rec.completion)


# ----------------------------------------------------------------------------------- collected chats


def _lines_for(grammar: str, texts: str) -> str:
    """An answer in the line format a chatsum grammar asks for, with the chat's text copied into it."""
    if grammar.startswith("root ::= topic"):
        name = re.search(r'^name ::= \("([^"]+)"', grammar, flags=re.M)
        return f"Topic | {name.group(1) if name else '?'}\nOverall: {texts}"
    names = re.findall(r'^v\d+ ::= "([^"]+): "', grammar, flags=re.M)
    return "\n".join([*(f"{n}: Reports {texts}" for n in names), f"Point: {texts} [1]"])


class EchoTeacher:
    """A stand-in for a teacher model behind a server. It answers whatever JSON schema the summarizer
    asks for (so it follows the summarizer's protocol, whatever it is) and copies the chat it was shown
    into every ``overall`` field: any text that reached the teacher would show up in the training data."""

    name = "echo"
    model_id = "echo-teacher"
    context_length = 8192

    def __init__(self) -> None:
        self.seen: list[str] = []

    def complete(
        self,
        turns: list[Turn],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        chat = next((t.content for t in reversed(turns) if "<chat>" in t.content), turns[-1].content)
        self.seen.append("\n".join(t.content for t in turns))  # everything it was shown
        texts = "; ".join(re.findall(r"^\[?\d+\]? [^:]+: (.*)$", chat, flags=re.M))
        if grammar is not None:  # chatsum's line formats: follow the grammar's own names and labels
            return Completion(text=_lines_for(grammar, texts), prompt_tokens=10, completion_tokens=10)
        answer = _fill(json_schema or {"type": "string"}, "answer", texts)
        return Completion(text=json.dumps(answer), prompt_tokens=10, completion_tokens=10)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)


def _fill(schema: dict[str, Any], key: str, texts: str) -> Any:
    """A value that satisfies ``schema``: every property filled, one item per array, the chat's text in
    ``overall``, generic words elsewhere (so no view or point reads as a copied message)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _fill(v, k, texts) for k, v in props.items()}
    if kind == "array":
        return [_fill(schema.get("items", {}), key, texts) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    limit = int(schema.get("maxLength", 200))
    text = f"The group talked: {texts}" if key == "overall" else f"Plans were discussed ({key})"
    return text[:limit]


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _msg(chat: str, mid: int, who: str, text: str, minutes: int) -> IncomingMessage:
    return IncomingMessage(
        platform="telegram",
        chat_id=chat,
        message_id=str(mid),
        sent_at=T0 + timedelta(minutes=minutes),
        sender_id=who.lower(),
        sender_name=who,
        text=text,
        chat_title=f"chat {chat}",
    )


def _config(tmp_path: Path) -> Any:
    from bot.config import parse_config

    return parse_config({"storage": {"data_dir": str(tmp_path)}})


def test_collected_chats_never_contain_opted_out_text_and_corrections_win(
    db: Database, tmp_path: Path
) -> None:
    ingest = Ingestor(db)
    secret = "my PIN is 4417 and I live at Elm Street 9"
    # Chat -100: Bob opts out later; a correction written before that mentions his message.
    ingest.ingest(
        [
            _msg("-100", 1, "Alice", "Shall we meet on Saturday for the hike?", 0),
            _msg("-100", 2, "Bob", secret, 1),
            _msg("-100", 3, "Carol", "Saturday works, 9am at the station", 2),
            _msg("-100", 4, "Alice", "Great, I will bring maps", 3),
            _msg("-100", 5, "Carol", "I'll bring snacks", 4),
            # a second conversation, hours later
            _msg("-100", 6, "Alice", "Who has the tent?", 300),
            _msg("-100", 7, "Bob", secret + " again", 301),
            _msg("-100", 8, "Carol", "I have the tent", 302),
            _msg("-100", 9, "Alice", "Thanks Carol", 303),
        ]
    )
    # Chat -200: a corrected summary that must win over the teacher.
    ingest.ingest(
        [
            _msg("-200", i, who, f"release note {i} from {who}", i)
            for i, who in enumerate(["Dan", "Eve", "Dan", "Eve"], start=1)
        ]
    )
    corrected = Summary(
        overall="Dan and Eve agreed the release notes.",
        topics=[
            Topic(
                title="Release notes",
                participants=[ParticipantView(speaker="Dan", view="wrote notes")],
                key_points=[KeyPoint(text="Notes agreed", message_refs=[1, 2])],
            )
        ],
    )
    with db.session() as s:
        from sqlalchemy import select

        from storage.models import Chat, Message

        chats = {c.platform_chat_id: c.id for c in s.scalars(select(Chat))}
        ids = {(m.chat_id, m.platform_message_id): m.id for m in s.scalars(select(Message))}
        for chat, lo, hi, text in (("-100", "1", "5", f"Alice and Bob: {secret}"), ("-200", "1", "4", None)):
            content = corrected.model_dump(mode="json")
            fix = corrected.model_copy(update={"overall": text}) if text else corrected
            s.add(
                StoredSummary(
                    chat_id=chats[chat],
                    window_start=T0,
                    window_end=T0,
                    first_message_id=ids[(chats[chat], lo)],
                    last_message_id=ids[(chats[chat], hi)],
                    message_count=int(hi) - int(lo) + 1,
                    content_hash="x",
                    mode="chatsum",
                    model_id="m",
                    prompt_version="p",
                    content=content,
                    corrected=fix.model_dump(mode="json"),
                )
            )
        set_opt_out(s, "telegram", "bob", True)

    teacher = EchoTeacher()
    records, stats = records_from_chats(
        db, _config(tmp_path), teacher=teacher, min_messages=3, cache=LabelCache(tmp_path / "labels.jsonl")
    )
    dumped = json.dumps([r.to_json() for r in records], ensure_ascii=False)
    assert "4417" not in dumped and "Elm Street" not in dumped
    assert not any("4417" in seen for seen in teacher.seen)  # not even the teacher saw it
    assert stats.corrections == 1 and stats.corrections_skipped == 1  # Bob's window changed: not trusted
    windows = {r.group: r.label for r in records if r.whole_window}
    assert sorted(windows.values()) == ["correction", "teacher:echo-teacher", "teacher:echo-teacher"]
    # A chatsum window is one record per model call, all in the window's group with its label.
    assert all(r.label == windows[r.group] for r in records)
    for group in windows:
        steps = [r.step for r in records if r.group == group]
        assert steps[0] == "plan" and steps.count("plan") == 1 and "topic" in steps, steps
    fixed_steps = [r for r in records if r.label == "correction"]
    assert [r.id.rsplit(":", 1)[-1] for r in fixed_steps] == ["plan", "topic1"]  # one topic: none left out
    fixed, topic = fixed_steps
    from model.validate import parse_plan

    assert parse_plan(fixed.completion).overall == "Dan and Eve agreed the release notes."  # step 1's target
    assert topic.prompt[-1][1].startswith("Step 2 for topic 1: Release notes")
    assert topic.completion.splitlines()[0] == "Dan: wrote notes"  # step 2's target: the corrected view
    write_records(tmp_path / "chats.jsonl", records)
    back = read_records(tmp_path / "chats.jsonl")
    assert [(r.id, r.step, r.completion) for r in back] == [(r.id, r.step, r.completion) for r in records]
    assert not any("release note" in seen for seen in teacher.seen)  # the corrected window is not re-labelled
    assert all(r.mode == "chatsum" for r in records)
    want = build_turns(list(fixed.messages), "chatsum", "en", few_shot=False)
    assert _turns(fixed) == [(t.role, t.content) for t in want]

    # A second run takes the teacher's labels from the cache.
    again = EchoTeacher()
    _, stats2 = records_from_chats(
        db, _config(tmp_path), teacher=again, min_messages=3, cache=LabelCache(tmp_path / "labels.jsonl")
    )
    assert stats2.teacher_cached == 2 and stats2.teacher_labelled == 0 and again.seen == []

    # Carol opts out too: her windows change, their old labels (which quote her) are never reused and
    # are removed from the cache file.
    with db.session() as s:
        set_opt_out(s, "telegram", "carol", True)
    third = EchoTeacher()
    records3, stats3 = records_from_chats(
        db, _config(tmp_path), teacher=third, min_messages=2, cache=LabelCache(tmp_path / "labels.jsonl")
    )
    assert stats3.teacher_cached == 0 and stats3.teacher_labelled == 2 and stats3.teacher_dropped == 2
    on_disk = (tmp_path / "labels.jsonl").read_text(encoding="utf-8")
    assert "Saturday works" not in on_disk and "I have the tent" not in on_disk
    assert "Saturday works" not in json.dumps([r.to_json() for r in records3])


def test_data_command_writes_split_files_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "samsum.jsonl", SAMSUM)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "built"
    res = runner.invoke(
        app, ["data", "--samsum", str(src), "--out", str(out), "--val-fraction", "0.3", "--config", str(cfg)]
    )
    assert res.exit_code == 0, res.output
    assert "records read 3" in res.output
    rows = [
        json.loads(line)
        for p in ("train.jsonl", "validation.jsonl")
        for line in (out / p).read_text().splitlines()
    ]
    assert sorted(r["id"] for r in rows) == ["samsum:s1:overall", "samsum:s2:overall", "samsum:s3:overall"]

    dry = runner.invoke(
        app,
        [
            "data",
            "--samsum",
            str(src),
            "--out",
            str(tmp_path / "dry"),
            "--dry-run",
            "--base-model",
            str(tmp_path / "missing-model"),
            "--config",
            str(cfg),
        ],
    )
    assert dry.exit_code == 0, dry.output
    assert "[1] Anna: Lunch at 12?" in dry.output and "nothing written" in dry.output
    assert not (tmp_path / "dry").exists()

    bad = runner.invoke(app, ["data", "--role", str(src), "--config", str(cfg)])
    assert bad.exit_code == 1 and "role data needs user, agent and final summaries" in bad.output


def test_bare_command_says_when_there_is_too_little_to_train_on(db: Database, tmp_path: Path) -> None:
    """``python -m finetune`` on a database with a few short chats and no teacher: a plain error, no run."""
    Ingestor(db).ingest([_msg("-300", i, who, f"hello {i}", i) for i, who in enumerate(["Ann", "Bo"], 1)])
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\nurl = "{db.engine.url}"\n', encoding="utf-8"
    )
    res = CliRunner().invoke(app, ["--config", str(cfg), "--no-teacher", "--out", str(tmp_path / "run")])
    assert res.exit_code == 1, res.output
    assert "1 chat(s), 1 window(s)" in res.output
    assert "error: only 0 training records (at least 8 are needed)" in res.output
    assert not (tmp_path / "run").exists()
