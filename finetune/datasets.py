"""Readers that turn public dialogue-summarization JSONL files into chat windows with references.

Evaluation and training both need the same thing from a record: the conversation as the
``ChatMessage`` list the summarizer sees in production, plus the reference summary for each mode
that the record can be scored on. Keeping that conversion here means a SAMSum line, a CSDS
role-reference record and a stored chat all reach the model through one path.

Supported record shapes (one JSON object per line, see ``../shared/data/SOURCES.md``):

* SAMSum / DialogSum: ``{id, dialogue: "Name: text\\n...", summary}`` -> mode ``overall``.
* CSDS role references: ``user_summary`` / ``agent_summary`` / ``final_summary`` (or the original
  CSDS keys ``UserSumm`` / ``AgentSumm`` / ``FinalSumm``, strings or lists of sentences) -> modes
  ``user``, ``agent``, and ``all`` plus ``overall`` for the final summary.
* CSDS-topic / DialogSum-topic: ``{topic, summary, turns | utterances}`` -> mode ``aspect`` with the
  topic as the focus (the summary there covers one topic only, so scoring it as ``overall`` would
  be wrong).
* VCSum segments: ``{context: [[sentence, ...], ...], speaker: [int, ...], summary}`` -> ``overall``.

Dialogues may be a ``"Name: text"`` string, a list of such strings, a list of ``{role|speaker,
text|utterance}`` objects, or a ``turns`` list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.schema import ChatMessage

EVAL_MODES: tuple[str, ...] = ("overall", "user", "agent", "all", "aspect")

# Role names used by CSDS / JDDC (Chinese) and by the original CSDS Q/A speaker codes.
_USER_ROLES = {"用户", "user", "customer", "顾客", "客户"}
_AGENT_ROLES = {"客服", "agent", "assistant", "staff"}
# The original CSDS files code speakers as Q (customer) and A (agent).
_CSDS_CODES = {"Q": "用户", "A": "客服"}

# "Name: text" with an ASCII or full-width colon. Speaker names are short and have no line break.
_SPEAKER_LINE = re.compile(r"^\s*([^:：\n]{1,40}?)\s*[:：]\s?(.*)$")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class DatasetError(ValueError):
    """A data file or record cannot be used; the message names the file, the line and the key."""


@dataclass(frozen=True)
class EvalExample:
    """One dialogue to summarize, with the reference for every mode the record supports."""

    id: str
    messages: list[ChatMessage]
    references: dict[str, str]
    language: str
    focus: str | None = None
    source: dict[str, Any] = field(default_factory=dict, repr=False)

    def reference(self, mode: str) -> str:
        """The reference for ``mode``; a clear error says which modes this record can be scored on."""
        try:
            return self.references[mode]
        except KeyError:
            have = ", ".join(sorted(self.references)) or "none"
            raise DatasetError(
                f"example {self.id!r} has no reference for mode {mode!r} (it has: {have})"
            ) from None


def detect_language(text: str) -> str:
    """'zh' when a meaningful share of letters are CJK ideographs, else 'en'.

    The threshold is low on purpose: Chinese support chats are full of order numbers, URLs and
    English product names, and a single Chinese sentence is enough to need the character tokenizer.
    """
    letters = sum(1 for ch in text if ch.isalpha())
    if not letters:
        return "en"
    return "zh" if len(_CJK.findall(text)) / letters >= 0.2 else "en"


def role_of(speaker: str) -> str | None:
    """Map a support-chat speaker label to the summarizer's 'user' / 'agent' roles (None otherwise)."""
    key = speaker.strip().lower()
    if key in _USER_ROLES:
        return "user"
    if key in _AGENT_ROLES:
        return "agent"
    return None


def parse_dialogue(dialogue: str, *, default_speaker: str = "unknown") -> list[ChatMessage]:
    """Split a ``"Name: text"`` transcript into messages.

    A line without a speaker prefix continues the previous message (SAMSum has multi-line turns);
    before any speaker it is attributed to ``default_speaker`` so no text is silently dropped.
    """
    turns: list[tuple[str, str]] = []
    for raw in dialogue.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        m = _SPEAKER_LINE.match(line)
        if m and m.group(2).strip():
            turns.append((m.group(1).strip(), m.group(2).strip()))
        elif m and turns and not m.group(2).strip():
            # "Name:" alone: an empty turn (SAMSum has a few); keep the speaker, no text to add.
            turns.append((m.group(1).strip(), ""))
        elif turns:
            speaker, text = turns[-1]
            turns[-1] = (speaker, f"{text}\n{line}" if text else line)
        else:
            turns.append((default_speaker, line))
    return messages_from_turns(turns)


def messages_from_turns(turns: list[tuple[str, str]]) -> list[ChatMessage]:
    """Number ``(speaker, text)`` pairs as the summarizer's 1-based window; empty turns are skipped."""
    out: list[ChatMessage] = []
    for speaker, text in turns:
        if not text.strip():
            continue
        out.append(ChatMessage(ref=len(out) + 1, speaker=speaker, text=text, role=role_of(speaker)))
    return out


def _text(value: Any, *, where: str, language_hint: str | None = None) -> str:
    """A reference as one string: CSDS stores summaries as lists of sentences."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [v.strip() for v in value if v.strip()]
        joined = "".join(parts)
        sep = "" if (language_hint or detect_language(joined)) == "zh" else " "
        return sep.join(parts)
    raise DatasetError(f"{where}: expected a string or a list of strings, got {type(value).__name__}")


def _turn_list(items: list[Any], where: str) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            msgs = parse_dialogue(item)
            turns.extend((m.speaker, m.text) for m in msgs)
        elif isinstance(item, dict):
            speaker = item.get("role", item.get("speaker", item.get("name")))
            text = item.get("text", item.get("utterance", item.get("content")))
            if not isinstance(speaker, str | int) or not isinstance(text, str):
                raise DatasetError(
                    f"{where}[{i}]: a turn needs a speaker ('role'/'speaker') and a 'text'/'utterance' string"
                )
            turns.append((str(speaker), _unsegment(text)))
        else:
            kind = type(item).__name__
            raise DatasetError(f"{where}[{i}]: a turn must be a string or an object, got {kind}")
    speakers = {s for s, _ in turns}
    if turns and all(isinstance(it, dict) for it in items) and speakers <= set(_CSDS_CODES):
        turns = [(_CSDS_CODES[s], t) for s, t in turns]
    return turns


_SEGMENT_SPACE = re.compile(r"(?<=[^\x00-\x7f]) +(?=[^\x00-\x7f])")


def _unsegment(text: str) -> str:
    """Original CSDS utterances are word-segmented Chinese ("我 想 问 一下"): join them again so the
    model sees natural text. Spaces between ASCII words (product names, URLs) are kept."""
    return _SEGMENT_SPACE.sub("", text)


def _vcsum_turns(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    context, speakers = record["context"], record.get("speaker")
    if not isinstance(context, list) or not isinstance(speakers, list) or len(speakers) != len(context):
        raise DatasetError(f"{where}: 'context' and 'speaker' must be lists of the same length")
    turns = []
    for spk, sentences in zip(speakers, context, strict=True):
        text = "".join(sentences) if isinstance(sentences, list) else str(sentences)
        turns.append((f"发言人{spk}", text))
    return turns


_ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "user": ("user_summary", "UserSumm", "user_summ"),
    "agent": ("agent_summary", "AgentSumm", "agent_summ"),
    "all": ("final_summary", "FinalSumm", "final_summ"),
}


def example_from_record(record: dict[str, Any], *, where: str, index: int) -> EvalExample:
    """Build an ``EvalExample`` from one parsed JSON object (``where`` names it in errors)."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rid = str(record.get("id", record.get("idx", index)))

    if "dialogue" in record or "Dialogue" in record:
        dialogue = record.get("dialogue", record.get("Dialogue"))
        if isinstance(dialogue, str):
            messages = parse_dialogue(dialogue)
        elif isinstance(dialogue, list):
            messages = messages_from_turns(_turn_list(dialogue, f"{where}: key 'dialogue'"))
        else:
            raise DatasetError(f"{where}: key 'dialogue' must be a string or a list of turns")
    elif "turns" in record:
        if not isinstance(record["turns"], list):
            raise DatasetError(f"{where}: key 'turns' must be a list")
        messages = messages_from_turns(_turn_list(record["turns"], f"{where}: key 'turns'"))
    elif "utterances" in record:
        if not isinstance(record["utterances"], list):
            raise DatasetError(f"{where}: key 'utterances' must be a list")
        messages = messages_from_turns(_turn_list(record["utterances"], f"{where}: key 'utterances'"))
    elif "context" in record:
        messages = messages_from_turns(_vcsum_turns(record, where))
    else:
        raise DatasetError(
            f"{where}: no dialogue found (expected one of the keys 'dialogue', 'turns', 'utterances', "
            "'context'); a references-only file such as CSDS test_refs.jsonl must be joined to its "
            "dialogues first"
        )
    if not messages:
        raise DatasetError(f"{where}: the dialogue is empty")

    language = detect_language(" ".join(m.text for m in messages))
    refs: dict[str, str] = {}
    for mode, keys in _ROLE_KEYS.items():
        for key in keys:
            if key in record:
                refs[mode] = _text(record[key], where=f"{where}: key {key!r}", language_hint=language)
                break
    if "all" in refs:
        refs.setdefault("overall", refs["all"])

    focus: str | None = None
    if "summary" in record:
        summary = _text(record["summary"], where=f"{where}: key 'summary'", language_hint=language)
        topic = record.get("topic")
        if "turns" in record or "utterances" in record:
            # Topic-oriented sets: the reference covers one topic of the chat.
            if not isinstance(topic, str) or not topic.strip():
                raise DatasetError(f"{where}: a topic-oriented record needs a non-empty 'topic' string")
            focus = topic.strip()
            refs["aspect"] = summary
        else:
            refs.setdefault("overall", summary)
    if not refs:
        raise DatasetError(
            f"{where}: no reference summary (expected 'summary' or the role keys "
            "'user_summary' / 'agent_summary' / 'final_summary')"
        )
    for mode, ref in refs.items():
        if not ref:
            raise DatasetError(f"{where}: the reference for mode {mode!r} is empty")
    return EvalExample(
        id=rid,
        messages=messages,
        references=refs,
        language=language,
        focus=focus,
        source={k: v for k, v in record.items() if k in ("topic", "all_topics", "agenda")},
    )


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; a bad line names file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"data file not found: {p}")
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                msg = f"{p}:{lineno}: not valid JSON ({err.msg} at column {err.colno})"
                raise DatasetError(msg) from None


def load_examples(
    path: str | Path, *, limit: int | None = None, mode: str | None = None
) -> list[EvalExample]:
    """Read up to ``limit`` examples; with ``mode``, every one must have a reference for it.

    The mode check happens here, before any model runs, so a wrong ``--mode`` for a file fails in a
    second instead of after an hour of generation.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1, got {limit}")
    if mode is not None and mode not in EVAL_MODES:
        raise DatasetError(f"unknown mode {mode!r}; choose one of {', '.join(EVAL_MODES)}")
    out: list[EvalExample] = []
    seen: set[str] = set()
    for lineno, record in read_jsonl(path):
        ex = example_from_record(record, where=f"{path}:{lineno}", index=len(out))
        if ex.id in seen:
            raise DatasetError(f"{path}:{lineno}: duplicate id {ex.id!r}")
        seen.add(ex.id)
        if mode is not None and mode not in ex.references:
            have = ", ".join(sorted(ex.references))
            raise DatasetError(f"{path}:{lineno}: no reference for mode {mode!r} (this record has: {have})")
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DatasetError(f"{path}: no records")
    return out
