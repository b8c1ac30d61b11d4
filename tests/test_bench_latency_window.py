"""bench/chatsum_latency.py's window: its planted topics are known, so a summary's coverage is measured."""

from __future__ import annotations

from bench.chatsum_latency import _ACKS, planted_window, subjects_found, synthetic_window
from model.schema import KeyPoint, ParticipantView, Summary, Topic


def test_every_scripted_message_has_its_planted_topic_and_acknowledgements_none() -> None:
    messages, topic_of = planted_window(1000)
    assert messages == synthetic_window(1000) and len(messages) == 200
    assert set(topic_of.values()) == {0, 1, 2, 3}
    untopical = [m.text for m in messages if m.ref not in topic_of]
    assert untopical and set(untopical) <= set(_ACKS)  # only the acknowledgements have no topic


def test_subjects_found_ties_each_topic_to_the_subject_most_of_its_refs_are_from() -> None:
    messages, topic_of = planted_window(1001)
    by_topic: dict[int, list[int]] = {}
    for ref, k in sorted(topic_of.items()):
        by_topic.setdefault(k, []).append(ref)

    def topic(title: str, refs: list[int]) -> Topic:
        return Topic(
            title=title,
            participants=[ParticipantView(speaker=messages[0].speaker, view="Reports it.")],
            key_points=[KeyPoint(text=title, message_refs=refs)],
        )

    a, b = by_topic[0], by_topic[1]
    pieces = Summary(topics=[topic("one", a[:3]), topic("one again", a[3:5] + b[:1])], overall="x")
    assert subjects_found(pieces, topic_of) == 1  # two pieces of one subject find one
    two = Summary(topics=[topic("one", a[:3]), topic("two", b[:2])], overall="x")
    assert subjects_found(two, topic_of) == 2
