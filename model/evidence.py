"""Which messages of a window back a sentence of the summary, by the words they share.

The model cites messages and lists people, and a small model does both carelessly: on the README's
example chat the 1.5B listed all six people under every topic (those who never spoke on it got "Is fine
with it") and cited runs of consecutive numbers. Grammar cannot stop that — every name and every number
is a valid token — so ``model.validate`` checks the answer against the chat's words instead:

* a key point, decision or action whose refs are mostly not backed by their messages (no telling word
  shared) keeps only the backed ones; when none is, it cites the messages that share the most with it
  (or keeps its refs when no message shares anything). Mostly-backed refs stay as they are: the rest
  may be a paraphrase ("rolling it back" for "the rollback") that words alone cannot see;
* each message is given to the topic whose words (title, points, decisions, actions) it shares most,
  and a bare reply ("on it") to the topic of the message it answers; a view is kept when its speaker
  wrote a message the topic cites or was given, or a message given to no topic that shares a word
  with the view itself. Measured on the 1.5B's answer for ``examples/team_chat_en.json``: of the 24
  views of its four topics this drops 8, by our reading all from people who did not speak on that
  topic (two arguable: on "Release notes", Sofia and Jamie spoke about Friday's release, not its
  notes); a check against the whole window, without giving messages to topics, dropped 2.

A "telling" word is one found in at most half of the window's messages: a word everybody uses ("ok",
the product's name) backs nothing, while a topic's own words (the trip's "hotel", said in a tenth of
the messages) do; when several messages could be cited, rarer shared words rank first. Words are
case-folded, NFKC-normalised and lightly stemmed (English ``-s``/``-es``/``-ed``/``-ing``); Han text
counts by character pairs. Function words and the reporting verbs views open with are ignored.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence

from model.schema import ChatMessage

#: A word backs nothing when more than this share of the window's messages contain it.
MAX_SHARE = 0.5
#: A key point whose refs share nothing with it cites at most this many messages instead.
MAX_RECITED = 3

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOP = _wordset(
    """a an the of on in at to for from by with about into over after before and or but if so as than
    then is are was were be been being am do does did done has have had having it its it's this that
    these those there here they them their he him his she her we us our you your i me my mine not no
    yes ok okay just also too very really all any some more most much many one ones will would can
    could should shall may might must what which who whom when where why how let lets get got go going
    see say says said think know like want wants need needs please thanks thank sure yeah hi hello hey
    now today tomorrow tonight yesterday still again only even well back up down out off way thing
    things something anything everyone someone people team week weeks day days month time next few last
    first new good great nice take make made meet meeting work"""
) | _wordset(
    # The generic reporting verbs views open with (``model.prompts.VIEW_VERBS``), stemmed as _stem
    # leaves them; the ones that carry content ("Booked", "Fixed", "Voted") still count.
    """ask suggest propose agree disagree object report confirm offer prefer explain plan note remind
    worry support share announce update request recommend warn volunteer promise approve admit cannot
    doubt decide expect joke"""
) | _wordset("的 了 是 在 我 你 他 她 们 这 那 就 也 都 和 与 吗 呢 吧 啊 好 要 有 会 说 想")


def _stem(word: str) -> str:
    if len(word) > 4 and not word.isdigit():
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                return word[: -len(suffix)]
    return word


def content_words(text: str, ignore: Collection[str] = frozenset()) -> set[str]:
    """The words of ``text`` that can tie it to a message: stemmed Latin/Cyrillic words of 2+ letters or
    any number, and pairs of adjacent Han characters, minus function words and ``ignore``."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    words: set[str] = set()
    for run in _HAN.findall(norm):
        if len(run) == 1:
            words.add(run)
        else:
            words.update(run[i : i + 2] for i in range(len(run) - 1))
    for w in _WORD.findall(_HAN.sub(" ", norm)):
        if len(w) >= 2 or w.isdigit():
            words.add(_stem(w))
    return {w for w in words if w not in _STOP and w not in ignore}


class Evidence:
    """The content words of a window's messages and how rare each is there."""

    def __init__(self, messages: Sequence[ChatMessage]) -> None:
        names: set[str] = set()
        for m in messages:
            names |= content_words(m.speaker)
        self._names = frozenset(names)  # a name in a view ("Agrees with Tom") ties it to no message
        self.words = {m.ref: content_words(m.text, self._names) for m in messages}
        self.refs_of: dict[str, list[int]] = {}  # each speaker's messages
        for m in messages:
            self.refs_of.setdefault(m.speaker, []).append(m.ref)
        self._reply_to = {m.ref: m.reply_to_ref for m in messages if m.reply_to_ref is not None}
        df = Counter(w for ws in self.words.values() for w in ws)
        n = len(messages)
        # Rarity (inverse document frequency) of the telling words; common words are left out.
        self._idf = {w: math.log((n + 1) / c) for w, c in df.items() if c <= max(1.0, MAX_SHARE * n)}

    def terms(self, text: str) -> set[str]:
        return content_words(text, self._names)

    def support(self, terms: set[str], ref: int) -> float:
        """How strongly message ``ref`` backs a text with these content ``terms``: 0 when it shares no
        telling word with it, else the summed rarity of those it shares."""
        return sum(self._idf.get(w, 0.0) for w in terms & self.words.get(ref, set()))

    def telling(self, ref: int) -> int:
        """How many telling words message ``ref`` has (0: nothing that could tie it to a topic)."""
        return sum(1 for w in self.words.get(ref, set()) if w in self._idf)

    def backs(self, terms: set[str], ref: int) -> bool:
        return self.support(terms, ref) > 0

    def best(self, terms: set[str], *, limit: int = MAX_RECITED) -> list[int]:
        """The messages that back ``terms`` best (strongest first, ties by position), at most ``limit``."""
        scored = ((self.support(terms, r), r) for r in self.words)
        ranked = sorted(((s, r) for s, r in scored if s > 0), key=lambda sr: (-sr[0], sr[1]))
        return [r for _, r in ranked[:limit]]

    def assign(self, topics: Sequence[set[str]]) -> dict[int, set[int]]:
        """Each message's topics (indexes into ``topics``, each a set of content terms): those it backs
        most, all of them on a tie; none when it shares no telling word with any. A reply that shares
        none takes the topics of the message it answers (messages come in order, so that one is known)."""
        given: dict[int, set[int]] = {}
        for ref in self.words:
            scores = [self.support(terms, ref) for terms in topics]
            top = max(scores, default=0.0)
            mine = {i for i, score in enumerate(scores) if score == top and top > 0}
            if not mine and ref in self._reply_to:
                mine = set(given.get(self._reply_to[ref], set()))
            given[ref] = mine
        return given
