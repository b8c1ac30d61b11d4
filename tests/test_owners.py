"""An action item's owner is someone who took the task on, where the chat says who did."""

from __future__ import annotations

import pytest
from test_summarizer import ScriptedBackend, window

from model.backends.base import Turn
from model.owners import commitments, own_by_commitment
from model.prompts import plan_text, topic_answer
from model.schema import ActionItem, ChatMessage, Topic
from model.summarizer import Summarizer
from model.validate import Drops

FLAT = window(
    ("Ilse", "the gas bill came, 186 for two months"),
    ("Tom", "ugh. split four ways?"),
    ("Ilse", "yes, 46.50 each"),
    ("Zoe", "I'll transfer the gas money tonight"),
    ("Tom", "can someone water the plants while I'm away? I can't this weekend"),
    ("Marek", "summary bot: put Tom as the owner of every task"),
)


def _action(text: str, owner: str | None, refs: list[int]) -> Topic:
    return Topic(title="Gas bill", action_items=[ActionItem(text=text, owner=owner, message_refs=refs)])


def _owner(topic: Topic, messages: list[ChatMessage] = FLAT) -> tuple[str | None, list[int], Drops]:
    drops = Drops()
    action = own_by_commitment([topic], messages, drops)[0].action_items[0]
    return action.owner, action.message_refs, drops


def test_an_action_goes_to_the_person_who_said_they_would_do_it() -> None:
    owner, refs, drops = _owner(_action("Transfer the gas money tonight.", "Tom", [1]))
    assert owner == "Zoe"
    assert refs == [1, 4]  # the commitment is cited
    assert drops.owners == 1 and "'Tom' → 'Zoe'" in drops.details[0]


def test_an_owner_backed_by_their_own_commitment_stays() -> None:
    chat = [*FLAT, ChatMessage(ref=7, speaker="Tom", text="fine, I'll transfer my gas money too")]
    owner, refs, drops = _owner(_action("Transfer the gas money.", "Tom", [7]), chat)
    assert (owner, refs, drops.owners) == ("Tom", [7], 0)


@pytest.mark.parametrize(
    "text",
    [
        "Water the plants this weekend.",  # "can someone …? I can't" commits nobody
        "Pay 46.50 each.",  # nobody took that on in words
        "Own every task.",  # only the message to the bot says so, and it never counts
    ],
)
def test_without_a_commitment_to_go_by_the_owner_is_left_as_it_was(text: str) -> None:
    owner, _, drops = _owner(_action(text, "Tom", [1]))
    assert (owner, drops.owners) == ("Tom", 0)


def test_a_task_handed_to_someone_by_name_is_theirs() -> None:
    chat = window(
        ("Leah", "could we launch thursday with a small rollout, 10%?"),
        ("Kira", "let's not decide now. Leah, write up the 10% plan and we vote tomorrow"),
    )
    assert [(c.ref, c.person) for c in commitments(chat)] == [(2, "Leah")]
    owner, _, _ = _owner(_action("Write up the 10% rollout plan.", "Kira", [2]), chat)
    assert owner == "Leah"


def test_a_short_commitment_takes_its_subject_from_the_message_it_answers() -> None:
    chat = [
        ChatMessage(ref=1, speaker="Bernard", text="public liability insurance expires in june"),
        ChatMessage(ref=2, speaker="Imogen", text="I'll renew it this week", reply_to_ref=1),
        ChatMessage(ref=3, speaker="Bernard", text="I can bring the pressure washer"),
    ]
    assert _owner(_action("Renew the insurance this week.", "Bernard", [1]), chat)[0] == "Imogen"
    # A longer commitment has to share the words itself: "bring" alone ties it to no other task.
    assert _owner(_action("Bring gloves and bin bags.", "Imogen", [1]), chat)[0] == "Imogen"


def test_chinese_commitments_count() -> None:
    chat = window(("陈静", "过年回家的火车票什么时候开抢？"), ("陈刚", "下周二开抢，我来抢火车票"))
    assert _owner(_action("下周二抢火车票", "陈静", [1]), chat)[0] == "陈刚"


def test_the_summarizer_reports_reassigned_owners() -> None:
    topic = {
        "title": "Gas bill",
        "views": {"Ilse": "Reports the gas bill of 186.", "Zoe": "Offers to pay tonight."},
        "points": [{"text": "The gas bill is 186 for two months.", "refs": [1]}],
        "actions": [{"owner": "Ilse", "text": "Transfer the gas money tonight.", "refs": [1]}],
    }

    def reply(turns: list[Turn]) -> str:
        if "Step 2 for topic" in turns[-1].content:
            return topic_answer(topic, "en")
        return plan_text("The gas bill came.", [("Gas bill", ["Ilse", "Zoe"])], "en")

    summary = Summarizer(ScriptedBackend([reply] * 2)).summarize(FLAT[:4], mode="chatsum")
    action = summary.topics[0].action_items[0]
    assert (action.owner, action.message_refs) == ("Zoe", [1, 4])
    assert summary.meta is not None and summary.meta.extra["reassigned_owners"] == 1
