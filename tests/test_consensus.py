"""Consensus selection among sampled answers (``model.consensus``), on hand-made candidates."""

from __future__ import annotations

from model.consensus import consensus_index, overlap_f1, unigrams


def test_the_answer_closest_to_the_others_wins() -> None:
    texts = [
        "Tom will bring the cake to the party.",  # greedy, but alone in naming Tom
        "Anna will buy the cake and bring it on Saturday.",
        "Anna is buying the cake for Saturday's party.",
        "Anna will bring a cake on Saturday.",
    ]
    assert consensus_index(texts) == 1  # it shares the most words with the three others


def test_ties_go_to_the_first_answer() -> None:
    assert consensus_index(["Ann agreed.", "Ann agreed.", "Ann agreed."]) == 0
    assert consensus_index(["Ann agreed.", "Bob left."]) == 0  # two candidates always tie
    assert consensus_index(["only one"]) == 0 and consensus_index([]) == 0


def test_words_are_casefolded_stemmed_and_chinese_counted_by_character() -> None:
    assert unigrams("Meeting MEETINGS meets") == unigrams("meeting meeting meet")
    assert unigrams("小王明天开会") == unigrams("开会明天小王")
    assert sum(unigrams("小王明天 10 点开会").values()) == 8  # seven characters and "10"
    assert overlap_f1(unigrams("小王明天开会"), unigrams("小李明天休息")) == 0.5  # 小, 明, 天 of six


def test_empty_answers_share_nothing() -> None:
    assert overlap_f1(unigrams(""), unigrams("a b")) == 0.0
    assert consensus_index(["", "Ann agreed to Monday.", "Ann agreed on Monday."]) in (1, 2)
