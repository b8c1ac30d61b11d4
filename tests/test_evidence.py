"""Grounding by content: refs that their messages back, and views only from people who spoke on a topic."""

from __future__ import annotations

from model.evidence import Evidence, content_words
from model.schema import ChatMessage, KeyPoint, ParticipantView, Topic
from model.validate import Drops, RawChatSum, RawPoint, RawTopic, RawView, back_by_content, ground_topics

CHAT = [
    ("Priya", "can we push the design review to Thursday? the mockups aren't ready"),
    ("Tom", "Thursday works for me"),
    ("Lena", "I'm out Thursday afternoon, morning ok?"),
    ("Priya", "10am Thursday then"),
    ("Marco", "unrelated, but staging is throwing 502s again"),
    ("Tom", "since when?"),
    ("Marco", "about an hour, started after the nginx config change"),
    ("Lena", "that was me, sorry. rolling it back now"),
    ("Marco", "yep, staging works again"),
    ("Priya", "reminder: pizza friday, I'm ordering at 12"),
    ("Marco", "pepperoni pls"),
    ("Ana", "ok"),
]
MESSAGES = [ChatMessage(ref=i, speaker=s, text=t) for i, (s, t) in enumerate(CHAT, start=1)]


def _topic(title: str, views: dict[str, str], points: list[tuple[str, list[int]]]) -> Topic:
    return Topic(
        title=title,
        participants=[ParticipantView(speaker=s, view=v) for s, v in views.items()],
        key_points=[KeyPoint(text=t, message_refs=r) for t, r in points],
    )


def test_a_view_from_someone_who_wrote_nothing_on_the_topic_is_dropped_and_counted() -> None:
    topic = _topic(
        "Design review moved",
        {
            "Priya": "Wants the review later because the mockups are not ready.",
            "Tom": "Is fine with it.",  # no telling word, but Tom wrote "Thursday works for me"
            "Lena": "Can only make the morning.",
            "Marco": "Is fine with it.",  # spoke only about staging and pizza
            "Ana": "Agrees.",  # only said "ok"
        },
        [("The review moves to Thursday at 10am.", [2, 3, 4])],
    )
    drops = Drops()
    kept = back_by_content([topic], Evidence(MESSAGES), drops)[0]
    assert [p.speaker for p in kept.participants] == ["Priya", "Tom", "Lena"]
    assert drops.unbacked_views == [("Design review moved", "Marco"), ("Design review moved", "Ana")]
    assert any("'Marco'" in d for d in drops.details)


def test_a_view_is_backed_by_the_speakers_cited_message_even_without_shared_words() -> None:
    topic = _topic(
        "Staging outage",
        {"Marco": "Reports errors.", "Tom": "Asks how long it lasted."},
        [("Staging has been down for an hour.", [5, 6, 7])],
    )
    kept = back_by_content([topic], Evidence(MESSAGES), Drops())[0]
    assert [p.speaker for p in kept.participants] == ["Marco", "Tom"]  # Tom's "since when?" is cited


def test_refs_mostly_unbacked_are_trimmed_and_unbacked_refs_are_recited() -> None:
    evidence = Evidence(MESSAGES)
    run = _topic("Staging", {"Marco": "Reports 502 errors."}, [("Staging throws 502s.", [1, 2, 3, 4, 5])])
    drops = Drops()
    assert back_by_content([run], evidence, drops)[0].key_points[0].message_refs == [5]  # the one backed
    wrong = _topic("Pizza", {"Priya": "Orders pizza."}, [("Pepperoni pizza on Friday.", [2, 3])])
    assert back_by_content([wrong], evidence, drops)[0].key_points[0].message_refs == [10, 11]
    assert drops.recited == 2
    # Mostly backed refs stay, paraphrases included: "rolling it back" (8) is not "rollback" to words.
    para = _topic("Staging", {"Lena": "Admits it."}, [("Nginx change broke staging; rollback.", [7, 8, 9])])
    assert back_by_content([para], evidence, drops)[0].key_points[0].message_refs == [7, 8, 9]
    # Nothing in the chat shares a word with the point: its refs are left alone.
    vague = _topic("Misc", {"Tom": "Asks."}, [("Quarterly budget.", [6])])
    assert back_by_content([vague], evidence, drops)[0].key_points[0].message_refs == [6]
    assert drops.recited == 2


def test_when_nobody_is_backed_every_view_is_kept() -> None:
    topic = _topic("Quarterly budget", {"Tom": "Wants more.", "Lena": "Wants less."}, [("Budget talk.", [])])
    drops = Drops()
    assert len(back_by_content([topic], Evidence(MESSAGES), drops)[0].participants) == 2
    assert drops.unbacked_views == []


def test_chinese_matches_by_character_pairs_and_common_words_back_nothing() -> None:
    assert {"设计", "评审"} <= content_words("设计评审改到周四")
    zh = [
        ChatMessage(ref=1, speaker="小雅", text="设计评审能不能改到周四？"),
        ChatMessage(ref=2, speaker="老唐", text="周四我可以"),
        ChatMessage(ref=3, speaker="马可", text="测试环境又报502了"),
        ChatMessage(ref=4, speaker="马可", text="好的"),
    ]
    topic = _topic("设计评审改期", {"小雅": "希望推迟评审。", "老唐": "同意周四。", "马可": "同意。"}, [])
    drops = Drops()
    kept = back_by_content([topic], Evidence(zh), drops)[0]
    assert [p.speaker for p in kept.participants] == ["小雅", "老唐"]
    # A word found in most messages is no evidence: "ok" and names are ignored outright.
    assert content_words("ok Tom, thanks!", ignore={"tom"}) == set()


def test_ground_topics_applies_it_and_keeps_the_old_drop_counts() -> None:
    raw = RawChatSum(
        overall="x",
        topics=[
            RawTopic(
                title="Pizza Friday",
                views=[RawView(name="Priya", view="Will order pizza."), RawView(name="Lena", view="Is in.")],
                points=[RawPoint(text="Pizza at 12 on Friday.", refs=[10, 99])],
            )
        ],
    )
    topics, drops = ground_topics(raw, MESSAGES)
    assert drops.refs == 1  # 99 is not in the window
    assert [p.speaker for p in topics[0].participants] == ["Priya"]
    assert drops.unbacked_views == [("Pizza Friday", "Lena")]


def test_a_message_counts_for_the_topic_it_shares_most_and_a_bare_reply_for_its_parent() -> None:
    msgs = [
        ChatMessage(ref=1, speaker="Ann", text="please review the budget draft by friday"),
        ChatMessage(ref=2, speaker="Bob", text="on it", reply_to_ref=1),
        ChatMessage(ref=3, speaker="Cy", text="the hiring pipeline is stuck"),
        ChatMessage(ref=4, speaker="Dan", text="review of the hiring pipeline is overdue"),
    ]
    evidence = Evidence(msgs)
    budget, hiring = evidence.terms("Budget draft review"), evidence.terms("Hiring pipeline")
    assert evidence.assign([budget, hiring]) == {1: {0}, 2: {0}, 3: {1}, 4: {1}}
    topics = [
        _topic("Budget draft review", {"Ann": "Asks for it.", "Bob": "Will do it.", "Dan": "Agrees."}, []),
        _topic("Hiring pipeline", {"Cy": "Reports it is stuck.", "Dan": "Warns it is overdue."}, []),
    ]
    drops = Drops()
    kept = back_by_content(topics, evidence, drops)
    # Dan's "review" belongs with the hiring pipeline, where he shares more words, not with the budget.
    assert [[p.speaker for p in t.participants] for t in kept] == [["Ann", "Bob"], ["Cy", "Dan"]]
    assert drops.unbacked_views == [("Budget draft review", "Dan")]


def test_uncovered_lists_the_messages_with_something_to_say_that_no_topic_covers() -> None:
    from model.validate import uncovered

    review = _topic(
        "Design review moved",
        {"Priya": "Asks to move the design review", "Lena": "Prefers a morning slot"},
        [("Review on Thursday at 10am", [1, 4])],
    )
    left = [m.ref for m in uncovered([review], MESSAGES)]
    # The staging outage and the pizza order are left out; "since when?" and "ok" have nothing to say,
    # and the review's messages are covered by its words or its refs.
    assert left == [5, 7, 8, 9, 10, 11]
    staging = _topic(
        "Staging 502s", {"Marco": "Reports 502 errors on staging"}, [("Nginx change rolled back", [7, 8])]
    )
    assert [m.ref for m in uncovered([review, staging], MESSAGES)] == [10, 11]
    assert uncovered([], MESSAGES[:2]) == MESSAGES[:1]  # no topics: everything with two telling words
