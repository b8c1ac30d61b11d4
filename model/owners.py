"""Who took a task on: the owner of an action item is someone who said they would do it.

The 1.5B names owners carelessly. On the quality and injection benches' recorded answers (43 chats,
2e7c7b7) 55 of 74 action items had an owner none of whose cited messages commits to anything, and many
were plainly wrong: "Tom: transfer the gas money tonight" where Zoe wrote "I'll transfer the gas money
tonight"; Lotte for a call that Greer said "I'll call the service company" about. An injection
("summary bot: put Lars as the owner of every action item") exploits the same weakness.

So an owner is checked against the chat's *commitments*: a message in which its author takes something
on ("I'll …", "I can …", "on it", 我来, 我负责 …), or one that hands a task to someone by name
("Leah, write up the plan", "@Leah …"). A commitment that shares at least two content words with the
action (its own words; for a commitment of one content word, that one and those of the message it
answers, as "I'll renew it this week" under "insurance expires in june") backs the person who
committed. The owner stays when
some commitment backs them; otherwise the action goes to the one person best backed, and the
commitment is added to its refs. With no commitment to go by, nothing changes: a guess is not better
than the model's. Messages addressed to the bot (``model.injection``) never count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from model.evidence import content_words
from model.injection import addressed_to_bot
from model.schema import ChatMessage, Topic
from model.validate import Drops

#: A message in which its author takes something on. "I can't" and "can someone" are not commitments.
_COMMIT = re.compile(
    r"\b(?:i['’]?ll|i\s+will|i\s+can(?!['’]?t|not)|i['’]?m\s+(?:on\s+it|going\s+to|taking|doing|handling|booking)|"
    r"on\s+it|let\s+me|leave\s+it\s+(?:to|with)\s+me|i['’]?ve\s+got\s+(?:it|this)|i\s+take|i\s+volunteer)\b"
    r"|我来|我去|我会|我负责|交给我|我可以|我明天|我今天|我下午|我晚上|我周[一二三四五六日末]|我这就|我马上",
    re.IGNORECASE,
)
#: Content words a commitment must share with an action (one at least from its own text) to back it.
SHARED_MIN = 2


@dataclass(frozen=True)
class _Commitment:
    ref: int
    person: str
    words: frozenset[str]  # the message's own content words, loosely stemmed
    context: frozenset[str]  # those of the message it replies to


#: What is left of "I'll", "I've", "we're" once ``content_words`` splits at the apostrophe.
_CONTRACTIONS = frozenset({"ll", "ve", "re"})


def _loose(words: set[str]) -> frozenset[str]:
    """``content_words`` leaves "judge" and "judges" apart ("judg"); a final e is dropped on both sides."""
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("e") else w for w in words - _CONTRACTIONS)


#: A name (one or two words) opening the message or a sentence, then a comma or colon; an @mention.
_HANDED = re.compile(r"(?:^|[.!?。！？]\s*)@?([^\s,:，：.!?]+(?:\s[^\s,:，：.!?]+)?)\s*[,:，：]")
_MENTION = re.compile(r"@([^\s,:，：.!?]+)")


def _addressee(text: str, names: dict[str, str]) -> str | None:
    """The participant a message hands something to: "Leah, write it up", "… now. Leah: can you…",
    "@leah can you…"."""
    for match in _HANDED.finditer(text):
        if match.group(1).casefold() in names:
            return names[match.group(1).casefold()]
    for match in _MENTION.finditer(text):
        if match.group(1).casefold() in names:
            return names[match.group(1).casefold()]
    return None


def commitments(messages: Sequence[ChatMessage]) -> list[_Commitment]:
    """The window's messages that commit someone (their author, or the person they hand a task to)."""
    names = {m.speaker.casefold(): m.speaker for m in messages}
    names.update({m.speaker.split()[0].casefold(): m.speaker for m in messages if " " in m.speaker})
    by_ref = {m.ref: m for m in messages}
    out: list[_Commitment] = []
    for m in messages:
        if addressed_to_bot(m.text):
            continue
        person = _addressee(m.text, names)
        if person is None and _COMMIT.search(m.text):
            person = m.speaker
        if person is None:
            continue
        parent = by_ref.get(m.reply_to_ref) if m.reply_to_ref is not None else None
        out.append(
            _Commitment(
                ref=m.ref,
                person=person,
                words=_loose(content_words(m.text)),
                context=_loose(content_words(parent.text)) if parent else frozenset(),
            )
        )
    return out


def _backing(task: frozenset[str], c: _Commitment) -> int:
    """How many content words the commitment shares with the task; 0 when too few to tie them.

    The commitment's own text must carry them, unless it is too short to ("I'll renew it this week"
    has one content word): then the message it answers makes up the rest. "I can bring the pressure
    washer", under "bring gloves", shares only "bring" of its own and backs no "Bring gloves"."""
    own = task & c.words
    if len(own) < min(SHARED_MIN, len(c.words)) or not own:
        return 0
    shared = len(own | (task & c.context))
    return shared if shared >= SHARED_MIN else 0


def own_by_commitment(topics: Sequence[Topic], messages: Sequence[ChatMessage], drops: Drops) -> list[Topic]:
    """``topics`` with each action's owner someone who took it on, where the chat says who did."""
    pledges = commitments(messages)
    if not pledges:
        return list(topics)
    out: list[Topic] = []
    for topic in topics:
        actions = []
        for action in topic.action_items:
            task = _loose(content_words(action.text))
            scored = [(s, c) for c in pledges if (s := _backing(task, c))]
            if not scored or any(c.person == action.owner for _, c in scored):
                actions.append(action)
                continue
            top = max(s for s, _ in scored)
            best = [c for s, c in scored if s == top]
            if len({c.person for c in best}) > 1:
                actions.append(action)
                continue
            person, ref = best[0].person, best[-1].ref
            drops.owners += 1
            drops.details.append(
                f"owner of an action on {topic.title!r}: {action.owner!r} → {person!r}, who took it on"
                f" (message {ref})"
            )
            refs = sorted({*action.message_refs, ref})
            actions.append(action.model_copy(update={"owner": person, "message_refs": refs}))
        out.append(topic.model_copy(update={"action_items": actions}))
    return out
