"""Training data: sources in, instruction records out, with the very prompts the bot uses at inference.

Every record is built by ``model.prompts.build_training_example`` (the inference prompt without
in-context examples, plus the target), so a fine-tuned model is trained on exactly what it will be
asked. Records are stored in TRL's *conversational prompt-completion* shape (``prompt``: the system and
user turns, ``completion``: the assistant turn): the trainer then applies the model's chat template the
way inference does and computes the loss on the completion only.

Sources:

* SAMSum / DialogSum-style JSONL -> ``overall`` records;
* role data (CSDS style, user / agent / final summaries) -> one record **per role** (modes ``user``,
  ``agent`` and ``all``, the whole-exchange summary), as Baichuan2-Sum trains them;
* aspect data (a dialogue or a document, an aspect or topic, a summary) -> ``aspect`` records;
* collected chats from storage: each conversation window (the same slicing as the bot) labelled by a
  human-corrected summary when one is stored, else by a *teacher* back-end in ``chatsum`` mode. A
  ``chatsum`` label is one record **per model call** inference makes (``step``: the plan, each topic,
  the missed-subjects question; ``model.prompts.chatsum_training_pairs``), all in the window's group. Only
  what ``storage.queries.load_window_messages`` returns is ever read, so deleted messages, opted-out
  placeholders and everything by a user who is opted out now never reach a record; a stored correction
  whose window has changed since (a message deleted or its author opted out) is skipped rather than
  trusted, because its text may describe what that person said.

``finalize`` then de-duplicates, filters by length and splits deterministically (by a hash of the
source dialogue, so the role records of one dialogue never straddle train and validation), counting
what each step removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from finetune.datasets import EvalExample, example_from_record, messages_from_turns, read_jsonl
from model.language import detect_language
from model.prompts import ROLE_MODES, build_training_example, chatsum_training_pairs, summary_to_target
from model.schema import ChatMessage, Summary
from model.tokens import estimate_tokens

#: Tokens a chat template adds per turn (role markers, separators), for the estimate used without a tokenizer.
TURN_OVERHEAD = 8
SOURCE_KINDS: tuple[str, ...] = ("overall", "role", "aspect")


class DataError(ValueError):
    """Training data cannot be built; the message names the file, record or setting at fault."""


@dataclass(frozen=True)
class InstructionRecord:
    """One training example: the prompt turns as inference builds them, and the assistant's target."""

    id: str
    group: str  # the source dialogue: the unit of the train/validation split
    source: str  # samsum | role | aspect | chats | a file stem
    mode: str
    language: str
    prompt: tuple[tuple[str, str], ...]  # (role, content) turns
    completion: str
    label: str  # where the target came from: reference | correction | teacher:<model>
    focus: str | None = None
    messages: tuple[ChatMessage, ...] = field(default=(), repr=False, compare=False)
    step: str = ""  # chatsum: which model call ("plan", "topic", "missed"); empty for one-call modes

    @property
    def whole_window(self) -> bool:
        """Whether the record stands for its window in evaluation: one per window (a chatsum plan)."""
        return self.step in ("", "plan")

    def to_json(self) -> dict[str, Any]:
        """TRL's conversational prompt-completion row, plus what evaluation needs to re-run the prompt."""
        return {
            "id": self.id,
            "group": self.group,
            "source": self.source,
            "mode": self.mode,
            "language": self.language,
            "focus": self.focus,
            "label": self.label,
            "step": self.step,
            "prompt": [{"role": r, "content": c} for r, c in self.prompt],
            "completion": [{"role": "assistant", "content": self.completion}],
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in self.messages],
        }

    @classmethod
    def from_json(cls, row: dict[str, Any], *, where: str) -> InstructionRecord:
        try:
            completion = row["completion"]
            target = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            return cls(
                id=str(row["id"]),
                group=str(row.get("group", row["id"])),
                source=str(row.get("source", "")),
                mode=str(row["mode"]),
                language=str(row.get("language", "en")),
                prompt=tuple((str(t["role"]), str(t["content"])) for t in row["prompt"]),
                completion=str(target),
                label=str(row.get("label", "reference")),
                focus=row.get("focus"),
                messages=tuple(ChatMessage.model_validate(m) for m in row.get("messages", [])),
                step=str(row.get("step") or ""),
            )
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise DataError(f"{where}: not an instruction record ({type(err).__name__}: {err})") from None

    def turns(self) -> list[dict[str, str]]:
        """Prompt and target as chat messages, for a tokenizer's chat template."""
        return [{"role": r, "content": c} for r, c in self.prompt] + [
            {"role": "assistant", "content": self.completion}
        ]

    def to_example(self) -> EvalExample:
        """The record as an evaluation example: same chat, same mode, the target as the reference."""
        ref_mode = "overall" if self.mode == "chatsum" else self.mode
        reference = chatsum_text(self.completion) if self.mode == "chatsum" else self.completion
        return EvalExample(
            id=self.id,
            messages=list(self.messages),
            references={ref_mode: reference},
            language=self.language,
            focus=self.focus,
        )


def chatsum_text(target: str) -> str:
    """A chatsum target as plain text for ROUGE: the overall line and each topic's title and points."""
    try:
        data = json.loads(target)
    except json.JSONDecodeError:
        return target
    parts = [str(data.get("overall", ""))]
    for topic in data.get("topics", []):
        parts.append(str(topic.get("title", "")))
        parts.extend(str(v) for v in (topic.get("views") or {}).values())
        parts.extend(str(p.get("text", "")) for p in topic.get("points", []))
    return " ".join(p for p in parts if p)


def make_records(
    messages: Sequence[ChatMessage],
    *,
    mode: str,
    target: str,
    rid: str,
    group: str,
    source: str,
    label: str,
    language: str | None = None,
    focus: str | None = None,
) -> list[InstructionRecord]:
    """The one place records' prompts are built (``model.prompts``): one record for a one-call mode, one
    per call for ``chatsum`` (ids ``<rid>:plan``, ``<rid>:topic1``…, ``<rid>:missed``). Training only
    the plan would leave the topic answers, most of what a chatsum summary says, untrained."""
    lang = language or detect_language([m.text for m in messages])
    if mode == "chatsum":
        calls = []
        topics = 0
        for st in chatsum_training_pairs(messages, lang, target):
            topics += st.step == "topic"
            name = f"topic{topics}" if st.step == "topic" else st.step
            calls.append((f"{rid}:{name}", st.step, st.turns, st.target))
    else:
        turns, completion = build_training_example(messages, mode, lang, target, focus=focus)
        calls = [(rid, "", turns, completion)]
    return [
        InstructionRecord(
            id=call_id,
            group=group,
            source=source,
            mode=mode,
            language=lang,
            prompt=tuple((t.role, t.content) for t in turns),
            completion=completion,
            label=label,
            focus=focus if mode == "aspect" else None,
            messages=tuple(messages),
            step=step,
        )
        for call_id, step, turns, completion in calls
    ]


# ----------------------------------------------------------------------------------- public datasets


def records_from_example(ex: EvalExample, source: str, kind: str = "auto") -> list[InstructionRecord]:
    """Instruction records for one dataset example.

    ``kind`` ``role`` gives one record per role (user, agent, and the whole exchange as ``all``);
    ``overall`` one overall record; ``aspect`` one record for the example's topic; ``auto`` picks by the
    references the example has (role references win, then aspect, then overall).
    """
    has_roles = all(m in ex.references for m in ROLE_MODES)
    if kind == "auto":
        kind = "role" if has_roles else "aspect" if "aspect" in ex.references else "overall"
    if kind == "role":
        if not has_roles:
            have = ", ".join(sorted(ex.references))
            raise DataError(
                f"example {ex.id!r}: role data needs user, agent and final summaries (has: {have})"
            )
        modes: tuple[str, ...] = ROLE_MODES
    elif kind == "aspect":
        if "aspect" not in ex.references or not ex.focus:
            raise DataError(f"example {ex.id!r}: aspect data needs an aspect (topic) and its summary")
        modes = ("aspect",)
    elif kind == "overall":
        if "overall" not in ex.references:
            raise DataError(f"example {ex.id!r}: no overall summary")
        modes = ("overall",)
    else:
        raise DataError(f"unknown data kind {kind!r}; choose one of auto, {', '.join(SOURCE_KINDS)}")
    group = f"{source}:{ex.id}"
    return [
        rec
        for mode in modes
        for rec in make_records(
            ex.messages,
            mode=mode,
            target=ex.reference(mode),
            rid=f"{group}:{mode}" + (f":{_short_hash(ex.focus or '')}" if mode == "aspect" else ""),
            group=group,
            source=source,
            label="reference",
            focus=ex.focus,
        )
    ]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _aspect_record(record: dict[str, Any], where: str, index: int) -> EvalExample:
    """Aspect data in the shape ``{dialogue | document | turns, aspect | topic, summary}``.

    A document (no speakers) becomes one message per paragraph from the speaker "Document", so the same
    aspect prompt serves documents and chats.
    """
    aspect = record.get("aspect", record.get("topic"))
    if not isinstance(aspect, str) or not aspect.strip():
        raise DataError(f"{where}: aspect data needs a non-empty 'aspect' (or 'topic') string")
    summary = record.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise DataError(f"{where}: aspect data needs a non-empty 'summary' string")
    rid = str(record.get("id", record.get("idx", index)))
    if "document" in record:
        doc = record["document"]
        if not isinstance(doc, str) or not doc.strip():
            raise DataError(f"{where}: key 'document' must be a non-empty string")
        paragraphs = [p.strip() for p in doc.replace("\r\n", "\n").split("\n\n") if p.strip()]
        messages = messages_from_turns([("Document", p) for p in paragraphs])
    else:
        base = example_from_record(
            {k: v for k, v in record.items() if k not in ("aspect", "topic", "summary")}
            | {"summary": summary},
            where=where,
            index=index,
        )
        messages = base.messages
    return EvalExample(
        id=rid,
        messages=messages,
        references={"aspect": summary.strip()},
        language=detect_language([m.text for m in messages]),
        focus=aspect.strip(),
    )


_SPLIT_NAME = re.compile(r"^(train|training|valid|validation|val|dev|test)([-_.]?\d+)?$", re.I)


def source_name(path: Path) -> str:
    """``samsum/train-00.jsonl`` -> ``samsum``; ``my_chats.jsonl`` -> ``my_chats``: a split file is named
    by its folder, any other file by itself."""
    return path.parent.name if _SPLIT_NAME.match(path.stem) and path.parent.name else path.stem


def records_from_file(
    path: str | Path, kind: str = "auto", *, limit: int | None = None, source: str | None = None
) -> list[InstructionRecord]:
    """Read a JSONL dataset file into records; errors name the file and line."""
    p = Path(path)
    src = source or source_name(p)
    out: list[InstructionRecord] = []
    for n, (lineno, row) in enumerate(read_jsonl(p)):
        if limit is not None and n >= limit:
            break
        where = f"{p}:{lineno}"
        if kind == "aspect" and isinstance(row, dict) and ("aspect" in row or "document" in row):
            ex = _aspect_record(row, where, n)
        else:
            ex = example_from_record(row, where=where, index=n)
        try:
            out.extend(records_from_example(ex, src, kind))
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    if not out:
        raise DataError(f"{p}: no records")
    return out


# ----------------------------------------------------------------------------------- collected chats


@dataclass
class ChatStats:
    """What the collected-chats builder saw and did, for the plain report of ``python -m finetune``."""

    chats: int = 0
    windows: int = 0
    corrections: int = 0
    corrections_skipped: int = 0
    teacher_labelled: int = 0
    teacher_cached: int = 0
    teacher_failed: int = 0
    unlabelled: int = 0
    too_short: int = 0
    teacher_dropped: int = 0  # cached labels of windows that changed or are gone, removed from disk
    notes: list[str] = field(default_factory=list)


class LabelCache:
    """Teacher answers by window content, in a JSONL file: a rerun (or a crash) never pays twice."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.entries[str(row["key"])] = str(row["target"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by a crash; the window is simply labelled again

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def keep_only(self, keys: set[str]) -> int:
        """Rewrite the file with just ``keys`` (the windows of this run); returns how many were dropped.

        A window whose messages changed (deleted, or an author opted out) gets a new key, so its old label
        is never reused; dropping it here also removes its text from disk at the next run.
        """
        stale = set(self.entries) - keys
        if not stale:
            return 0
        self.entries = {k: v for k, v in self.entries.items() if k in keys}
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(
                "".join(
                    json.dumps({"key": k, "target": v}, ensure_ascii=False) + "\n"
                    for k, v in self.entries.items()
                ),
                encoding="utf-8",
            )
            tmp.replace(self.path)
        return len(stale)

    def put(self, key: str, target: str) -> None:
        self.entries[key] = target
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "target": target}, ensure_ascii=False) + "\n")


def _window_key(messages: Sequence[ChatMessage], teacher_id: str) -> str:
    payload = json.dumps(
        [teacher_id, [[m.speaker, m.text, m.reply_to_ref] for m in messages]], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def records_from_chats(
    db: Any,
    config: Any,
    *,
    teacher: Any | None = None,
    chats: Sequence[str] | None = None,
    min_messages: int = 4,
    cache: LabelCache | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[InstructionRecord], ChatStats]:
    """Records from the chats in ``db``: corrections first, then teacher labels for the other windows.

    ``teacher`` is any ``model.backends`` back-end (``None``: only corrected windows are used).
    ``chats`` limits to these chat references (as ``storage.queries.find_chat`` reads them); by default
    every chat the config allows (``privacy.allowed_chats``).
    """
    from sqlalchemy import select

    from bot.service import chat_allowed, to_chat_messages
    from model.windows import slice_windows
    from storage.models import Chat
    from storage.models import Summary as StoredSummary
    from storage.queries import find_chat, load_window_messages

    stats = ChatStats()
    records: list[InstructionRecord] = []
    summarizer = None
    teacher_id = ""
    if teacher is not None:
        from model.summarizer import Summarizer

        summarizer = Summarizer(
            teacher, language=config.model.language, max_new_tokens=config.model.max_new_tokens
        )
        teacher_id = str(getattr(teacher, "model_id", "teacher"))
    cache = cache or LabelCache(None)

    with db.session() as session:
        if chats:
            rows = []
            for ref in chats:
                chat = find_chat(session, ref)
                if chat is None:
                    raise DataError(f"no chat {ref!r} in {config.database_url}; `chatsum chats` lists them")
                rows.append(chat)
        else:
            rows = [
                c
                for c in session.scalars(select(Chat).order_by(Chat.id))
                if chat_allowed(config, c.platform, c.platform_chat_id)
            ]
        plan: list[tuple[str, list[Any], list[Any]]] = []
        for chat in rows:
            stats.chats += 1
            window_msgs = load_window_messages(session, chat.id)
            corrected = list(
                session.scalars(
                    select(StoredSummary)
                    .where(StoredSummary.chat_id == chat.id, StoredSummary.corrected.is_not(None))
                    .order_by(StoredSummary.id)
                )
            )
            plan.append((f"{chat.platform}:{chat.platform_chat_id}", window_msgs, corrected))

    covered: set[int] = set()
    used_keys: set[str] = set()
    for chat_key, window_msgs, corrected in plan:
        by_id = {m.id: m for m in window_msgs}
        # A correction wins over any teacher label: its window is used as stored, newest correction first.
        for row in reversed(corrected):
            lo, hi = row.first_message_id, row.last_message_id
            span = [m for m in window_msgs if lo is not None and hi is not None and lo <= m.id <= hi]
            ids = {m.id for m in span}
            if ids & covered:
                continue  # an older correction of the same window
            if not span or len(span) != row.message_count or span[0].id != lo or span[-1].id != hi:
                # Messages were deleted or their author opted out since the correction was written: the
                # corrected text may still describe them, so it must not be trained on.
                stats.corrections_skipped += 1
                continue
            try:
                summary = Summary.model_validate(row.corrected)
                target = summary_to_target(summary) if row.mode == "chatsum" else summary.overall
                messages = to_chat_messages(span)
                recs = make_records(
                    messages,
                    mode=row.mode,
                    target=target,
                    rid=f"chats:{chat_key}:{lo}-{hi}:{row.mode}",
                    group=f"chats:{chat_key}:{lo}-{hi}",
                    source="chats",
                    label="correction",
                    focus=row.focus,
                )
            except ValueError as err:
                stats.corrections_skipped += 1
                stats.notes.append(f"correction {row.id} of {chat_key} is unusable: {err}")
                continue
            records.extend(recs)
            covered |= ids
            stats.corrections += 1

        windows = slice_windows(
            [by_id[i] for i in sorted(by_id, key=lambda i: (by_id[i].sent_at, i))],
            gap=timedelta(minutes=config.windows.gap_minutes),
            max_tokens=config.windows.max_tokens,
        )
        for win in windows:
            stats.windows += 1
            ids = {m.id for m in win.messages}
            if ids & covered:
                continue
            if len(win.messages) < min_messages:
                stats.too_short += 1
                continue
            messages = to_chat_messages(win.messages)
            if summarizer is None:
                stats.unlabelled += 1
                continue
            key = _window_key(messages, teacher_id)
            used_keys.add(key)
            cached = cache.get(key)
            if cached is not None:
                target = cached
                stats.teacher_cached += 1
            else:
                start = time.perf_counter()
                try:
                    summary = summarizer.summarize(messages, mode="chatsum")
                except Exception as err:  # one bad window must not end a long labelling run
                    stats.teacher_failed += 1
                    stats.notes.append(f"teacher failed on {chat_key} messages {win.messages[0].id}..: {err}")
                    continue
                target = summary_to_target(summary)
                cache.put(key, target)
                stats.teacher_labelled += 1
                if log:
                    log(
                        f"labelled {chat_key} window of {len(messages)} messages in "
                        f"{time.perf_counter() - start:.1f} s"
                    )
            first, last = win.messages[0].id, win.messages[-1].id
            records.extend(
                make_records(
                    messages,
                    mode="chatsum",
                    target=target,
                    rid=f"chats:{chat_key}:{first}-{last}:chatsum",
                    group=f"chats:{chat_key}:{first}-{last}",
                    source="chats",
                    label=f"teacher:{teacher_id}",
                )
            )
    if summarizer is not None and not chats:  # a full run: labels of windows that no longer exist go
        stats.teacher_dropped = cache.keep_only(used_keys)
    return records, stats


# ------------------------------------------------------------------------------------ finalizing


def estimate_record_tokens(record: InstructionRecord) -> int:
    """Prompt plus target tokens without a tokenizer: ``model.tokens`` plus the template's turn markers."""
    return (
        sum(estimate_tokens(c) + TURN_OVERHEAD for _, c in record.prompt)
        + estimate_tokens(record.completion)
        + TURN_OVERHEAD
    )


def tokenizer_counter(tokenizer: Any) -> Callable[[InstructionRecord], int]:
    """Exact length of a record as trained: the chat template applied to prompt and target."""

    def count(record: InstructionRecord) -> int:
        ids = tokenizer.apply_chat_template(record.turns(), tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)

    return count


@dataclass
class BuiltData:
    """The split data set and the counts behind it."""

    train: list[InstructionRecord]
    validation: list[InstructionRecord]
    counts: dict[str, int]

    def report(self) -> dict[str, Any]:
        by = Counter(f"{r.source}/{r.mode}" for r in self.train + self.validation)
        return {"counts": self.counts, "by_source_mode": dict(sorted(by.items()))}


def split_of(group: str, *, val_fraction: float, seed: int) -> str:
    """'train' or 'validation' from a hash of the group: stable across runs, machines and data order."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big")
    return "validation" if (h % 1_000_000) < val_fraction * 1_000_000 else "train"


def _dedup_key(record: InstructionRecord) -> str:
    chat = "\n".join(f"{r}:{c}" for r, c in record.prompt)
    return hashlib.sha256(f"{record.mode}\n{chat}".encode()).hexdigest()


def finalize(
    records: Iterable[InstructionRecord],
    *,
    val_fraction: float = 0.05,
    seed: int = 42,
    max_tokens: int | None = None,
    min_target_chars: int = 8,
    count_tokens: Callable[[InstructionRecord], int] = estimate_record_tokens,
) -> BuiltData:
    """De-duplicate (same mode and prompt: the first target wins), drop too-long or near-empty targets,
    and split by group. ``counts`` says how many records each step removed."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    train: list[InstructionRecord] = []
    validation: list[InstructionRecord] = []
    for rec in records:
        counts["read"] += 1
        key = _dedup_key(rec)
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        if len(rec.completion.strip()) < min_target_chars:
            counts["target_too_short"] += 1
            continue
        if max_tokens is not None and count_tokens(rec) > max_tokens:
            counts["too_long"] += 1
            continue
        (
            validation if split_of(rec.group, val_fraction=val_fraction, seed=seed) == "validation" else train
        ).append(rec)
    counts["train"] = len(train)
    counts["validation"] = len(validation)
    for k in ("read", "duplicates", "target_too_short", "too_long"):
        counts.setdefault(k, 0)
    return BuiltData(train, validation, dict(counts))


# ------------------------------------------------------------------------------------ files


def write_records(path: Path, records: Iterable[InstructionRecord]) -> str:
    """Write JSONL; returns the sha256 of the file (the data hash in the run metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            line = json.dumps(rec.to_json(), ensure_ascii=False) + "\n"
            fh.write(line)
            h.update(line.encode("utf-8"))
    return h.hexdigest()


def read_records(path: str | Path, *, allow_empty: bool = False) -> list[InstructionRecord]:
    p = Path(path)
    out = [InstructionRecord.from_json(row, where=f"{p}:{n}") for n, row in read_jsonl(p)]
    if not out and not allow_empty:
        raise DataError(f"{p}: no records")
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_dataset(data: BuiltData, out_dir: Path) -> dict[str, Any]:
    """``train.jsonl``, ``validation.jsonl`` and ``data_report.json`` (counts and hashes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = data.report()
    report["sha256"] = {
        "train": write_records(out_dir / "train.jsonl", data.train),
        "validation": write_records(out_dir / "validation.jsonl", data.validation),
    }
    (out_dir / "data_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------ dry run


def render_record(record: InstructionRecord, tokenizer: Any | None) -> tuple[str, str, int | None]:
    """(prompt text, trained text, total tokens) exactly as the model sees them.

    With a tokenizer the chat template is applied (the prompt ends with the generation prompt, the rest
    is what the loss is computed on). Without one, a plain rendering is returned and tokens is None.
    """
    if tokenizer is None:
        prompt = "\n".join(f"<{r}>\n{c}" for r, c in record.prompt) + "\n<assistant>\n"
        return prompt, record.completion, None
    head = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in record.prompt], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(record.turns(), tokenize=False)
    if not full.startswith(head):  # a template that renders the prompt differently when followed by an answer
        return full, "(the template renders prompt and answer together; see above)", None
    n = len(tokenizer(full, add_special_tokens=False)["input_ids"])
    return head, full[len(head) :], n


def iter_sources(
    samsum: Sequence[Path], role: Sequence[Path], aspect: Sequence[Path], *, limit: int | None
) -> Iterator[InstructionRecord]:
    for kind, paths in (("overall", samsum), ("role", role), ("aspect", aspect)):
        for path in paths:
            yield from records_from_file(path, kind, limit=limit)


# ------------------------------------------------------------------------------------ the command


def _print_dry_run(data: BuiltData, tokenizer: Any | None, show: int, echo: Callable[[str], None]) -> None:
    shown = [("train", r) for r in data.train[:show]] + [("validation", r) for r in data.validation[:1]]
    if tokenizer is None:
        echo("(no tokenizer: showing the turns without the model's chat template)")
    for split, rec in shown:
        head, trained, n = render_record(rec, tokenizer)
        tokens = f", {n} tokens" if n is not None else ""
        echo(f"=== {rec.id} ({split}, mode {rec.mode}, label {rec.label}{tokens}) ===")
        echo(head + trained)
        echo(f"--- the loss is computed on the {len(trained)} characters after the prompt: {trained!r}")
        echo("")


def command(
    samsum: Annotated[
        list[Path] | None,
        typer.Option("--samsum", help="SAMSum/DialogSum-style JSONL (overall); repeatable."),
    ] = None,
    role: Annotated[
        list[Path] | None, typer.Option("--role", help="Role data (user/agent/final summaries); repeatable.")
    ] = None,
    aspect: Annotated[
        list[Path] | None, typer.Option("--aspect", help="Aspect data (dialogue|document, aspect, summary).")
    ] = None,
    chats: Annotated[
        bool | None,
        typer.Option("--chats/--no-chats", help="Use the collected chats (default: when no file is given)."),
    ] = None,
    chat: Annotated[list[str] | None, typer.Option("--chat", help="Only this chat (repeatable).")] = None,
    teacher_backend: Annotated[
        str | None,
        typer.Option("--teacher-backend", help="llama_cpp | transformers | openai (default: [model])."),
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option("--teacher-model", help="Model for the teacher.")
    ] = None,
    no_teacher: Annotated[
        bool, typer.Option("--no-teacher", help="Only human-corrected windows; label nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default <data_dir>/finetune-data).")
    ] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9)] = 0.05,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_seq_len: Annotated[int | None, typer.Option("--max-seq-len", min=32)] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Read at most N records per file.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the first records as the model sees them; write nothing.")
    ] = False,
    show: Annotated[int, typer.Option("--show", min=1, help="Records printed by --dry-run.")] = 2,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Whose tokenizer/chat template (default [finetune]).")
    ] = None,
    exact: Annotated[
        bool,
        typer.Option("--exact-length/--estimate-length", help="Measure length with the real tokenizer."),
    ] = False,
    config_path: Annotated[Path | None, typer.Option("--config", help="config.toml to use.")] = None,
) -> None:
    """Build instruction records (train/validation JSONL) with the bot's own prompt templates."""
    from bot.config import load_config

    config = load_config(config_path)
    files = [*(samsum or []), *(role or []), *(aspect or [])]
    use_chats = chats if chats is not None else not files
    if not files and not use_chats:
        raise typer.BadParameter("nothing to build: give --samsum/--role/--aspect files or --chats")
    records = list(iter_sources(samsum or [], role or [], aspect or [], limit=limit))
    if use_chats:
        records.extend(chat_records(config, chat, teacher_backend, teacher_model, no_teacher, echo=_err))
    tokenizer = None
    base = base_model or config.finetune.base_model
    if dry_run or exact:
        from finetune.train import tokenizer_for

        try:
            tokenizer = tokenizer_for(base, config.data_dir)
        except Exception as err:  # the dry run still shows the turns; say why the template is missing
            _err(f"warning: no tokenizer for {base}: {err}")
    data = finalize(
        records,
        val_fraction=val_fraction,
        seed=config.finetune.seed if seed is None else seed,
        max_tokens=max_seq_len or config.finetune.max_seq_len,
        count_tokens=tokenizer_counter(tokenizer)
        if (exact and tokenizer is not None)
        else estimate_record_tokens,
    )
    counts = data.counts
    summary = (
        f"records read {counts['read']}: {counts['duplicates']} duplicates, {counts['too_long']} too long, "
        f"{counts['target_too_short']} with a near-empty target removed; "
        f"train {counts['train']}, validation {counts['validation']}"
    )
    if dry_run:
        _print_dry_run(data, tokenizer, show, typer.echo)
        typer.echo(summary + " (dry run: nothing written)")
        return
    out_dir = out or (config.data_dir / "finetune-data")
    write_dataset(data, out_dir)
    typer.echo(summary)
    typer.echo(
        f"written: {out_dir / 'train.jsonl'}, {out_dir / 'validation.jsonl'}, {out_dir / 'data_report.json'}"
    )


def _err(text: str) -> None:
    typer.echo(text, err=True)


def chat_records(
    config: Any,
    chat: Sequence[str] | None,
    teacher_backend: str | None,
    teacher_model: str | None,
    no_teacher: bool,
    *,
    echo: Callable[[str], None],
) -> list[InstructionRecord]:
    """Collected chats from the configured database, labelled as ``records_from_chats`` describes."""
    from finetune.eval import backend_for
    from storage.db import Database

    teacher = None if no_teacher else backend_for(config, teacher_backend, teacher_model)
    db = Database(config.database_url)
    try:
        cache = LabelCache(config.data_dir / "finetune" / "teacher-labels.jsonl")
        records, stats = records_from_chats(db, config, teacher=teacher, chats=chat, cache=cache, log=echo)
    finally:
        db.dispose()
    echo(describe_chat_stats(stats))
    return records


def describe_chat_stats(stats: ChatStats) -> str:
    text = (
        f"collected chats: {stats.chats} chat(s), {stats.windows} window(s); {stats.corrections} corrected "
        f"summaries used ({stats.corrections_skipped} skipped: their window changed since), "
        f"{stats.teacher_labelled} labelled by the teacher now and {stats.teacher_cached} from earlier runs, "
        f"{stats.teacher_failed} failed, {stats.too_short} too short, {stats.unlabelled} left unlabelled"
    )
    return "\n".join([text, *stats.notes[:5]])
