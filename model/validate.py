"""From the model's compact JSON to a trustworthy ``Summary``.

The model's answer is checked in two layers:

1. **Shape** (``parse_plan``, ``parse_topic_answer`` for the model-facing lines of the two chatsum steps;
   ``parse_chatsum`` for the whole compact JSON of training targets): does the answer have topic lines
   with titles and people, views and points? The parsers are lenient (an unconstrained back-end adds
   chatter, bullets or the other language's labels) and a failure is an ``OutputError`` whose message is
   fed back to the model for its one repair try.
2. **Grounding** (``ground_topics``): refs must point at messages of the window, speakers and action
   owners must be participants of it. What does not hold is *dropped and counted*, never guessed at —
   a summary that cites message 212 of a 200-message window, or quotes someone who was not there, is
   worse than a shorter one. A speaker named twice in one topic is folded into one entry (the schema
   forbids it under a grammar, but not every back-end has one). Then the answer is checked against the
   chat's words (``model.evidence``): a point keeps the refs whose messages back it (or cites those
   that do), and a view is dropped when its speaker wrote nothing on the topic.

Then ``merge_similar_topics`` folds near-duplicate topics (the same subject under two titles, or the
same subject found in two chunks of a long window) into one.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model.evidence import Evidence
from model.schema import ActionItem, ChatMessage, KeyPoint, ParticipantView, Summary, Topic


class OutputError(ValueError):
    """The model's answer is unusable as it stands; the message says why, for the repair prompt."""


# ---------------------------------------------------------------------------------------------------
# Shape: the model-facing JSON (mirror of ``model.prompts.plan_schema`` / ``topic_schema``), lenient


class _Raw(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RawPoint(_Raw):
    text: str = Field(min_length=1)
    refs: list[int] = Field(default_factory=list)

    @field_validator("refs", mode="before")
    @classmethod
    def _refs(cls, v: Any) -> Any:
        # "refs": 7 or "refs": ["7", "[8]"] from an unconstrained back-end: keep what is a number.
        items = v if isinstance(v, list) else [v]
        out: list[int] = []
        for item in items:
            if isinstance(item, bool):
                continue
            if isinstance(item, int):
                out.append(item)
            elif isinstance(item, str) and (m := re.search(r"\d+", item)):
                out.append(int(m.group()))
        return out


class RawAction(RawPoint):
    owner: str | None = None


class RawView(_Raw):
    name: str
    view: str = Field(min_length=1)


class RawTopic(_Raw):
    title: str = Field(min_length=1)
    views: dict[str, str] | list[RawView] = Field(default_factory=dict)
    points: list[RawPoint] = Field(default_factory=list)
    decisions: list[RawPoint] = Field(default_factory=list)
    actions: list[RawAction] = Field(default_factory=list)

    def view_pairs(self) -> list[tuple[str, str]]:
        if isinstance(self.views, dict):
            return [(k, v) for k, v in self.views.items()]
        return [(v.name, v.view) for v in self.views]


class RawChatSum(_Raw):
    overall: str = ""
    topics: list[RawTopic] = Field(min_length=1)


class RawPlan(_Raw):
    """Step 1 of chatsum: the topics and who took part in each."""

    class Item(_Raw):
        title: str = Field(min_length=1)
        people: list[str] = Field(default_factory=list)

    overall: str = ""
    topics: list[Item] = Field(min_length=1)


class RawTopicAnswer(_Raw):
    """Step 2 of chatsum: one topic's views, points, decisions and actions."""

    views: list[RawView] = Field(default_factory=list)
    points: list[RawPoint] = Field(default_factory=list)
    decisions: list[RawPoint] = Field(default_factory=list)
    actions: list[RawAction] = Field(default_factory=list)


class RawGroups(_Raw):
    class Group(_Raw):
        title: str = Field(min_length=1)
        ids: list[int] = Field(min_length=1)

    overall: str = ""
    topics: list[Group] = Field(min_length=1)


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The JSON object in an answer; tolerates code fences and chatter around it (unconstrained back-ends)."""
    stripped = _FENCE.sub("", text.strip())
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as first:
        start, end = stripped.find("{"), stripped.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(stripped[start : end + 1])
            except json.JSONDecodeError:
                pass
        if not stripped:
            raise OutputError("the answer was empty") from None
        raise OutputError(f"not valid JSON ({first.msg} at character {first.pos})") from None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "answer"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse_chatsum(text: str) -> RawChatSum:
    """Parse and shape-check a chatsum answer; ``OutputError`` says what was wrong."""
    data = extract_json(text)
    if not isinstance(data, dict):
        raise OutputError("the answer must be a JSON object with 'overall' and 'topics'")
    try:
        return RawChatSum.model_validate(data)
    except ValidationError as err:
        raise OutputError(_describe(err)) from None


#: Line labels of both languages (``model.prompts.LABELS``), so a Chinese chat answered with English
#: labels, or the reverse, still parses.
_OVERALL = re.compile(r"^\s*(?:overall|summary|总结|摘要)\s*[:：]\s*", re.IGNORECASE)
_POINT = re.compile(r"^\s*(?:point|key point|要点)\s*[:：]\s*", re.IGNORECASE)
_DECIDED = re.compile(r"^\s*(?:decided|decision|决定)\s*[:：]\s*", re.IGNORECASE)
_TODO = re.compile(r"^\s*(?:(?:todo|to do|action)(?=\s)|待办)\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)")
_TRAILING_REFS = re.compile(r"\s*[\[(（【]\s*((?:\d+\s*[,，、;]?\s*)+)[\])）】]\s*[.。]?\s*$")
_SEP = re.compile(r"\s*[:：]\s*")


def _lines(text: str) -> list[str]:
    return [_BULLET.sub("", line).strip() for line in text.strip().splitlines() if line.strip()]


def _split_refs(text: str) -> tuple[str, list[int]]:
    """``"Release on Monday [3, 4]"`` → ``("Release on Monday", [3, 4])``."""
    m = _TRAILING_REFS.search(text)
    if not m:
        return text.strip(), []
    return text[: m.start()].strip(), [int(r) for r in re.findall(r"\d+", m.group(1))]


def _names(text: str) -> list[str]:
    return [n.strip().strip("\"'") for n in re.split(r"[,，、;]", text) if n.strip().strip("\"'")]


def parse_plan(text: str) -> RawPlan:
    """Step 1 of chatsum: ``title | people`` lines and an ``Overall:`` line (see ``plan_grammar``)."""
    topics: list[RawPlan.Item] = []
    overall = ""
    for line in _lines(text):
        if _OVERALL.match(line):
            overall = _OVERALL.sub("", line).strip()
        elif "|" in line:
            title, _, people = line.partition("|")
            title = title.strip().strip("\"'*#")
            if title:
                topics.append(RawPlan.Item(title=title, people=list(dict.fromkeys(_names(people)))))
    if not topics:
        stripped = text.strip()
        raise OutputError(
            "the answer was empty"
            if not stripped
            else "no topic lines of the form 'title | people' (one per topic, then 'Overall: sentence')"
        )
    return RawPlan(overall=overall, topics=topics)


def _match_name(line: str, people: Sequence[str]) -> tuple[str, str] | None:
    """``(name, rest)`` when ``line`` starts with one of ``people`` and a colon (longest name first)."""
    for name in sorted(people, key=len, reverse=True):
        if line.startswith(name):
            rest = line[len(name) :]
            if m := _SEP.match(rest):
                return name, rest[m.end() :].strip()
    return None


def parse_topic_answer(text: str, people: Sequence[str] = ()) -> RawTopicAnswer:
    """Step 2 (one topic): ``Name: view`` lines, ``Point:``/``Decided:`` lines with refs, ``Todo`` lines.

    Names are matched against ``people`` first (a name may contain a colon); an unknown ``X: text`` line is
    kept as a view of X, for grounding to drop and count. A topic without a single view or point is
    unusable.
    """
    views: list[RawView] = []
    points: list[RawPoint] = []
    decisions: list[RawPoint] = []
    actions: list[RawAction] = []
    for line in _lines(text):
        if _POINT.match(line) or _DECIDED.match(line):
            body, refs = _split_refs((_POINT if _POINT.match(line) else _DECIDED).sub("", line))
            if body:
                (points if _POINT.match(line) else decisions).append(RawPoint(text=body, refs=refs))
            continue
        named = _match_name(line, people)
        if named is not None:
            if named[1]:
                views.append(RawView(name=named[0], view=named[1].strip('"')))
            continue
        todo = _TODO.match(line)
        if todo:
            rest = line[todo.end() :]
            named = _match_name(rest, people)
            if named is None and (m := _SEP.search(rest)) and 0 < m.start() <= 40:
                named = rest[: m.start()].strip(), rest[m.end() :].strip()
            owner, task = named if named else (None, rest)
            body, refs = _split_refs(task)
            if body:
                actions.append(RawAction(owner=owner or None, text=body, refs=refs))
            continue
        if (m := _SEP.search(line)) and 0 < m.start() <= 40:
            named = line[: m.start()].strip().strip("\"'*"), line[m.end() :].strip()
        if named and named[0] and named[1]:
            views.append(RawView(name=named[0], view=named[1].strip('"')))
    if not views and not points and not decisions:
        raise OutputError(
            "the answer was empty"
            if not text.strip()
            else "no 'Name: view' lines and no 'Point: … [refs]' line for the topic"
        )
    return RawTopicAnswer(views=views, points=points, decisions=decisions, actions=actions)


def parse_groups(text: str) -> RawGroups:
    data = extract_json(text)
    try:
        return RawGroups.model_validate(data)
    except ValidationError as err:
        raise OutputError(_describe(err)) from None


def salvage_cut_off(text: str) -> str | None:
    """The complete lines of an answer that hit the token limit: the unfinished last line is dropped.

    Only whole lines (whole topics of a plan, whole views and points of a topic) survive; returns None
    when not one line was finished. The caller records that the answer was cut off, so this never hides
    a truncation.
    """
    if "\n" not in text:
        return None
    kept = text[: text.rindex("\n")].rstrip()
    return kept or None


# ---------------------------------------------------------------------------------------------------
# Grounding


@dataclass
class Drops:
    """What grounding threw away, for ``SummaryMeta``."""

    refs: int = 0
    speakers: int = 0
    folded_views: int = 0
    recited: int = 0  # points, decisions and actions whose refs the chat's words changed
    owners: int = 0  # actions given to the person who took them on (``model.owners``)
    injected: int = 0  # items, views, topics and sentences that only an instruction to the bot backs
    unbacked_views: list[tuple[str, str]] = field(default_factory=list)  # (topic title, speaker)
    details: list[str] = field(default_factory=list)

    def add(self, other: Drops) -> None:
        self.refs += other.refs
        self.speakers += other.speakers
        self.folded_views += other.folded_views
        self.recited += other.recited
        self.owners += other.owners
        self.injected += other.injected
        self.unbacked_views.extend(other.unbacked_views)
        self.details.extend(other.details)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _norm_name(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().lstrip("@").casefold()


def _speaker_index(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """Normalised name → participant's name as written, so 'alice' or '@Alice' still count as Alice."""
    index: dict[str, str] = {}
    for m in messages:
        index.setdefault(_norm_name(m.speaker), m.speaker)
    return index


def _keep_refs(refs: Iterable[int], valid: set[int], drops: Drops) -> list[int]:
    kept: list[int] = []
    for r in refs:
        if r in valid:
            if r not in kept:
                kept.append(r)
        else:
            drops.refs += 1
            drops.details.append(f"ref {r} is not in the window")
    return sorted(kept)


def join_views(first: str, second: str, *, max_words: int = 30) -> str:
    """One view from two of the same person: both if short enough, else the later (their latest stance)."""
    if not first or _norm_text(first) == _norm_text(second):
        return second or first
    joined = f"{first.rstrip(' .;。；')}; {second}"
    return joined if _word_count(joined) <= max_words else second


def ground_topics(raw: RawChatSum, messages: Sequence[ChatMessage]) -> tuple[list[Topic], Drops]:
    """Map the compact answer into ``Topic``s, keeping only what the window can back up."""
    valid_refs = {m.ref for m in messages}
    names = _speaker_index(messages)
    drops = Drops()
    topics: list[Topic] = []
    for rt in raw.topics:
        views: dict[str, str] = {}
        for name, view in rt.view_pairs():
            speaker = names.get(_norm_name(name))
            view = _clean(view)
            if speaker is None:
                drops.speakers += 1
                drops.details.append(f"speaker {name!r} is not a participant")
                continue
            if not view:
                continue
            if speaker in views:
                drops.folded_views += 1
                views[speaker] = join_views(views[speaker], view)
            else:
                views[speaker] = view
        points = [
            KeyPoint(text=_clean(p.text), message_refs=_keep_refs(p.refs, valid_refs, drops))
            for p in rt.points
        ]
        decisions = [
            KeyPoint(text=_clean(p.text), message_refs=_keep_refs(p.refs, valid_refs, drops))
            for p in rt.decisions
        ]
        actions: list[ActionItem] = []
        for a in rt.actions:
            owner = names.get(_norm_name(a.owner)) if a.owner else None
            if a.owner and owner is None:
                drops.speakers += 1
                drops.details.append(f"action owner {a.owner!r} is not a participant")
            actions.append(
                ActionItem(
                    text=_clean(a.text), owner=owner, message_refs=_keep_refs(a.refs, valid_refs, drops)
                )
            )
        topics.append(
            Topic(
                title=_clean(rt.title),
                participants=[ParticipantView(speaker=s, view=v) for s, v in views.items()],
                key_points=[p for p in points if p.text],
                decisions=[d for d in decisions if d.text],
                action_items=[a for a in actions if a.text],
            )
        )
    return back_by_content(topics, Evidence(messages), drops), drops


_Cited = TypeVar("_Cited", KeyPoint, ActionItem)


def back_by_content(topics: Sequence[Topic], evidence: Evidence, drops: Drops) -> list[Topic]:
    """``topics`` with refs that their messages back, and views only from people who spoke on them.

    Who spoke on a topic: each message is given to the topic whose words (title, points, decisions,
    actions) it shares most (ties: all of them; a reply sharing none goes with the message it answers),
    so "I'll review it" counts for the PR it was said about, not for every topic that mentions a
    review. A view is dropped only when none of its speaker's messages is cited by the topic or given
    to it, *and* none shares a telling word with the view itself.

    Measured on the 1.5B's recorded answers for all 43 bench chats (``bench/chatsum_quality.py
    --replay``): without the check 395 views, 26 of them from people who did not speak on the planted
    topic; with it 322 views, 8 of those. Most of the 73 dropped are of people who did speak on the
    topic, but they are mostly empty ("Agrees with Greta", "Can only make 9 degrees"): precision over
    recall, since a view pinned on the wrong person misleads and a missing one only omits. Counting a
    shared word only for a message given to no topic dropped 84 (64 of real participants); also
    counting words shared with the topic changed one view.
    """

    def recite(item: _Cited) -> _Cited:
        terms = evidence.terms(item.text)
        backed = [r for r in item.message_refs if evidence.backs(terms, r)]
        if 2 * len(backed) >= len(item.message_refs) > 0:  # mostly backed: a paraphrase may hide the rest
            return item
        refs = sorted(backed or evidence.best(terms) or item.message_refs)
        if refs == item.message_refs:
            return item
        drops.recited += 1
        return item.model_copy(update={"message_refs": refs})

    recited = [
        t.model_copy(
            update={
                "key_points": [recite(p) for p in t.key_points],
                "decisions": [recite(d) for d in t.decisions],
                "action_items": [recite(a) for a in t.action_items],
            }
        )
        for t in topics
    ]
    items: list[list[KeyPoint | ActionItem]] = [
        [*t.key_points, *t.decisions, *t.action_items] for t in recited
    ]
    cited = [{r for item in its for r in item.message_refs} for its in items]
    about = [
        evidence.terms(" ".join([t.title, *(i.text for i in its)]))
        for t, its in zip(recited, items, strict=True)
    ]
    given = evidence.assign(about)
    out: list[Topic] = []
    for index, topic in enumerate(recited):
        kept: list[ParticipantView] = []
        for pv in topic.participants:
            own = evidence.refs_of.get(pv.speaker, [])
            view_terms = evidence.terms(pv.view)
            if any(
                r in cited[index]
                or index in given[r]
                or evidence.backs(view_terms, r)
                for r in own
            ):
                kept.append(pv)
        dropped = [pv for pv in topic.participants if pv not in kept]
        if not kept:  # nobody backed at all: nothing to judge by (or words the check misses), keep all
            kept, dropped = list(topic.participants), []
        for pv in dropped:
            drops.unbacked_views.append((topic.title, pv.speaker))
            drops.details.append(f"view of {pv.speaker!r} on {topic.title!r}: wrote nothing on it")
        out.append(topic.model_copy(update={"participants": kept}))
    return out


#: A message counts as left out of every topic only when it has at least this many telling words: "see
#: you all there" or "haha no way" has nothing a topic could be about.
MISSED_MIN_WORDS = 2


def uncovered(topics: Sequence[Topic], messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The messages with something to say that no topic covers (``covered_by``): cited by none, and the
    best match of none by the words they share with what it says (a bare reply goes with the message it
    answers).

    Why: the 1.5B's plans list the details of one subject as topics and leave others out, and what is
    left out shows as messages no topic shares a telling word with. Views count here (unlike in
    ``back_by_content``): "Wants a cheaper house" ties the house messages to its topic.
    """
    evidence = Evidence(messages)
    covered = set().union(*covered_by(topics, evidence))
    return [m for m in messages if m.ref not in covered and evidence.telling(m.ref) >= MISSED_MIN_WORDS]


def covered_by(topics: Sequence[Topic], evidence: Evidence) -> list[set[int]]:
    """Each topic's messages: those it cites and those given to it by ``Evidence.assign`` over its title,
    views, points, decisions and actions."""
    given = evidence.assign([evidence.terms(_topic_text(t)) for t in topics])
    return [_refs_of(t) | {r for r, mine in given.items() if i in mine} for i, t in enumerate(topics)]


def _topic_text(topic: Topic) -> str:
    """All a topic says: its title, views, points, decisions and actions."""
    return " ".join(
        [
            topic.title,
            *(pv.view for pv in topic.participants),
            *(p.text for p in [*topic.key_points, *topic.decisions]),
            *(a.text for a in topic.action_items),
        ]
    )


def most_covering(topics: Sequence[Topic], messages: Sequence[ChatMessage], k: int) -> list[int]:
    """Indexes (in order) of at most ``k`` topics that together cover the most messages: greedy set cover,
    a topic covering the messages ``covered_by`` gives it (as ``uncovered`` reads them).

    Why not the biggest ``k``: the details of one subject listed as topics ("Seating plan", "Parking",
    "Wifi" of one office move) are each big and share their subject's messages; a topic the
    missed-subjects question added has messages of its own. Why given messages and not every message
    sharing a word: a vague topic ("Roadmap meeting", views "Is fine with it") shares some word with
    many messages but is the best match of few; on the README's example the word rule kept it over the
    sync-engine PR.
    """
    covers = covered_by(topics, Evidence(messages))
    chosen: list[int] = []
    seen: set[int] = set()
    for _ in range(min(k, len(topics))):
        rest = [i for i in range(len(topics)) if i not in chosen]
        best = max(rest, key=lambda i: (len(covers[i] - seen), topic_weight(topics[i]), -i))
        chosen.append(best)
        seen |= covers[best]
    return sorted(chosen)


# ---------------------------------------------------------------------------------------------------
# Near-duplicate topics

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset(
    {"a", "an", "the", "of", "on", "for", "and", "to", "in", "with", "about", "re", "new", "our", "its"}
    | {"is", "are", "at", "by", "from", "vs", "的", "和", "与", "及"}
)


def _norm_text(text: str) -> str:
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _word_count(text: str) -> int:
    return len(_CJK_CHAR.findall(text)) // 2 + len([w for w in _WORD.findall(_CJK_CHAR.sub(" ", text))])


def _title_tokens(title: str) -> set[str]:
    norm = unicodedata.normalize("NFKC", title).casefold()
    han = "".join(_CJK_CHAR.findall(norm))
    tokens = {w.rstrip("s") if len(w) > 3 else w for w in _WORD.findall(_CJK_CHAR.sub(" ", norm))}
    tokens |= {han[i : i + 2] for i in range(len(han) - 1)} if len(han) > 1 else set(han)
    return {t for t in tokens if t and t not in _STOP}


def title_similarity(a: str, b: str) -> float:
    """0..1: how surely two titles name the same subject.

    The largest of: token Jaccard (CJK by character bigrams); 0.9 × the overlap coefficient when the
    shorter title has two or more tokens (one title contained in the other: "Staging errors" /
    "Staging 502 errors"); and the squared character-sequence ratio (near-identical spelling). Squaring
    keeps "Release date" / "Release notes" (ratio 0.8) apart.
    """
    ta, tb = _title_tokens(a), _title_tokens(b)
    jaccard = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    small = min(len(ta), len(tb))
    overlap = 0.9 * len(ta & tb) / small if small >= 2 else 0.0
    ratio = difflib.SequenceMatcher(None, _norm_text(a), _norm_text(b)).ratio()
    return max(jaccard, overlap, ratio * ratio)


def _refs_of(topic: Topic) -> set[int]:
    refs: set[int] = set()
    for p in [*topic.key_points, *topic.decisions]:
        refs.update(p.message_refs)
    for a in topic.action_items:
        refs.update(a.message_refs)
    return refs


def merge_topics(topics: Sequence[Topic], title: str | None = None) -> Topic:
    """One topic from several about the same subject: views joined per speaker, points concatenated."""
    views: dict[str, str] = {}
    points: list[KeyPoint] = []
    decisions: list[KeyPoint] = []
    actions: list[ActionItem] = []
    by_text: dict[str, int] = {}
    for t in topics:
        for p in t.participants:
            views[p.speaker] = join_views(views.get(p.speaker, ""), p.view)
        for kp in t.key_points:
            key = _norm_text(kp.text)
            if key in by_text:  # the same point found twice: one point, both sets of sources
                i = by_text[key]
                refs = sorted({*points[i].message_refs, *kp.message_refs})
                points[i] = KeyPoint(text=points[i].text, message_refs=refs)
            else:
                by_text[key] = len(points)
                points.append(kp)
        decisions.extend(t.decisions)
        actions.extend(t.action_items)
    return Topic(
        title=title or topics[0].title,
        participants=[ParticipantView(speaker=s, view=v) for s, v in views.items()],
        key_points=points,
        decisions=decisions,
        action_items=actions,
    )


def merge_similar_topics(topics: Sequence[Topic], *, threshold: float = 0.7) -> tuple[list[Topic], int]:
    """Fold topics whose titles say the same thing; returns the topics and how many were folded in.

    Titles are the signal because they name the subject (see ``title_similarity`` for which pairs the
    0.7 threshold joins and which it keeps apart; the cases are in tests/test_summarizer.py).
    """
    groups: list[list[Topic]] = []
    for topic in topics:
        for group in groups:
            if title_similarity(group[0].title, topic.title) >= threshold:
                group.append(topic)
                break
        else:
            groups.append([topic])
    merged = [g[0] if len(g) == 1 else merge_topics(g) for g in groups]
    return merged, len(topics) - len(merged)


def topic_weight(topic: Topic) -> int:
    """How much of the chat a topic covers, to keep the biggest when there are too many."""
    return len(_refs_of(topic)) + len(topic.participants)


# ---------------------------------------------------------------------------------------------------
# Quality signal: is a view a copied message?


def text_words(text: str) -> list[str]:
    """Casefolded words, with each CJK character a word of its own (Chinese has no spaces to split at)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    return _CJK_CHAR.findall(norm) + _WORD.findall(_CJK_CHAR.sub(" ", norm))


def view_copy_ratio(view: str, messages: Sequence[ChatMessage]) -> float:
    """Largest share of the view's words (CJK: characters) that one single message contains."""
    words = text_words(view)
    if not words:
        return 0.0
    best = 0.0
    for m in messages:
        pool = set(text_words(m.text))
        if pool:
            best = max(best, sum(1 for w in words if w in pool) / len(words))
    return best


def copied_views(
    summary: Summary, messages: Sequence[ChatMessage], *, threshold: float = 0.8
) -> tuple[int, int]:
    """(views whose words are >= ``threshold`` one single message, all views) — the ChatSum copy metric."""
    total = copied = 0
    for topic in summary.topics:
        for p in topic.participants:
            total += 1
            if view_copy_ratio(p.view, messages) >= threshold:
                copied += 1
    return copied, total
