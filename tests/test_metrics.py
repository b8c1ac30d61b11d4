"""Metrics on hand-written English and Chinese pairs, with values worked out by hand where possible."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from finetune.metrics import (
    CjkTokenizer,
    EmbeddingScorer,
    corpus_bleu,
    rouge,
    score_corpus,
    sentence_bleu,
    split_sentences,
)

EN_REF = "Amanda baked cookies and will bring Jerry some tomorrow."
ZH_REF = "用户想更改配送站点，客服表示目前不能修改。"


# --------------------------------------------------------------------------- tokenization


def test_default_rouge_tokenizer_really_drops_chinese() -> None:
    """The reason CjkTokenizer exists: rouge-score alone scores any Chinese pair as 0."""
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    assert plain.score(ZH_REF, ZH_REF)["rouge1"].fmeasure == 0.0


def test_cjk_tokenizer_splits_chinese_by_character_and_keeps_latin_words() -> None:
    tok = CjkTokenizer(use_stemmer=True)
    assert tok.tokenize("订单号ＡＢＣ123已经发货 running") == [
        "订",
        "单",
        "号",
        "abc123",
        "已",
        "经",
        "发",
        "货",
        "run",
    ]


def test_cjk_tokenizer_equals_rouge_default_on_english() -> None:
    from rouge_score.tokenizers import DefaultTokenizer

    text = "He's running to the U.S. office — 3 times, quickly!"
    assert CjkTokenizer(use_stemmer=True).tokenize(text) == DefaultTokenizer(use_stemmer=True).tokenize(text)


def test_split_sentences_handles_latin_and_cjk_punctuation() -> None:
    assert split_sentences("Hi there. How are you?\n我很好。你呢？好的") == [
        "Hi there.",
        "How are you?",
        "我很好。",
        "你呢？",
        "好的",
    ]


# --------------------------------------------------------------------------- ROUGE


def test_rouge_identical_is_one_and_disjoint_is_zero() -> None:
    same = rouge(EN_REF, EN_REF)
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0})
    assert rouge("The stock market fell sharply.", EN_REF) == {
        "rouge1": 0.0,
        "rouge2": 0.0,
        "rougeL": 0.0,
        "rougeLsum": 0.0,
    }


def test_rouge_english_matches_rouge_score_with_stemmer() -> None:
    pred = "Amanda baked some cookies. She is bringing them to Jerry tomorrow."
    ref_scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(
        EN_REF, pred
    )
    ours = rouge(pred, EN_REF)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(ref_scores[key].fmeasure)


def test_rouge_english_hand_computed() -> None:
    # pred tokens (stemmed): amanda bake cooki -> 3
    # ref: amanda bake cooki and will bring jerri some tomorrow -> 9
    # unigram overlap 3: P=1, R=1/3, F=0.5; bigrams: 2 of 2 vs 8 -> P=1, R=0.25, F=0.4
    scores = rouge("Amanda baked cookies", EN_REF)
    assert scores["rouge1"] == pytest.approx(0.5)
    assert scores["rouge2"] == pytest.approx(0.4)
    assert scores["rougeL"] == pytest.approx(0.5)


def test_rouge_chinese_pair_is_scored_by_character() -> None:
    pred = "用户询问可否帮忙改站点。客服回答暂时无法修改。"
    # Characters (punctuation dropped): pred 21, ref 19. Shared with multiplicity:
    # 用 户 改×2 站 点 客 服 修 = 9 -> P=9/21, R=9/19, F1 = 2*9/(21+19) = 0.45.
    scores = rouge(pred, ZH_REF)
    assert scores["rouge1"] == pytest.approx(0.45)
    assert 0 < scores["rouge2"] < scores["rouge1"]
    assert rouge(ZH_REF, ZH_REF)["rougeL"] == pytest.approx(1.0)
    assert rouge("今天天气很好", ZH_REF)["rouge1"] == 0.0


def test_rouge_lsum_uses_sentence_structure() -> None:
    ref = "Tom will buy milk. Anna will bake a cake."
    pred_swapped = "Anna will bake a cake. Tom will buy milk."
    scores = rouge(pred_swapped, ref)
    # Whole-text LCS is hurt by the swapped order; the summary-level LCS is not.
    assert scores["rougeLsum"] == pytest.approx(1.0)
    assert scores["rougeL"] < 1.0


# --------------------------------------------------------------------------- BLEU


def test_bleu_identical_and_disjoint() -> None:
    assert corpus_bleu([EN_REF], [EN_REF], language="en") == pytest.approx(100.0)
    assert corpus_bleu(["The stock market fell sharply"], [EN_REF], language="en") == pytest.approx(0.0)


def test_bleu_chinese_uses_the_zh_tokenizer() -> None:
    pred = "用户询问改站点。"
    ref = "用户询问可否帮忙改站点。"
    zh = sentence_bleu(pred, ref, language="zh")
    # With 13a a Chinese sentence is a single "word": no shared unigram at all, so BLEU is 0.
    assert sentence_bleu(pred, ref, language="en") == pytest.approx(0.0)
    assert 0 < zh < 100
    assert corpus_bleu([ref], [ref], language="zh") == pytest.approx(100.0)


def test_bleu_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        corpus_bleu(["a", "b"], ["a"], language="en")


# --------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def embedder() -> EmbeddingScorer:
    return EmbeddingScorer()


def test_english_embedding_similarity_ranks_paraphrase_above_unrelated(embedder: EmbeddingScorer) -> None:
    para = "Amanda will bring Jerry the cookies she baked, tomorrow."
    other = "The stock market fell sharply on Tuesday after the report."
    sims = embedder.score([EN_REF, para, other], [EN_REF] * 3, language="en")
    same, paraphrase, unrelated = sims
    assert same.cosine == pytest.approx(1.0, abs=1e-4)
    assert same.bertscore_f1 == pytest.approx(1.0, abs=1e-4)
    assert paraphrase.cosine > unrelated.cosine + 0.3
    assert paraphrase.bertscore_f1 is not None and unrelated.bertscore_f1 is not None
    assert paraphrase.bertscore_f1 > unrelated.bertscore_f1
    # Precision/recall are asymmetric: a prediction that is a strict part of the reference has
    # every token matched (high precision) but misses reference tokens (lower recall).
    part = embedder.score(["Amanda baked cookies"], [EN_REF], language="en")[0]
    assert part.bertscore_p is not None and part.bertscore_r is not None
    assert part.bertscore_p > part.bertscore_r


def test_chinese_embedding_similarity_ranks_paraphrase_above_unrelated(embedder: EmbeddingScorer) -> None:
    sims = embedder.score(
        ["用户询问可否帮忙改站点，客服回答暂时无法修改。", "今天天气很好，我们去公园散步吧。"],
        [ZH_REF, ZH_REF],
        language="zh",
    )
    assert sims[0].cosine > sims[1].cosine
    assert sims[0].bertscore_f1 is None  # no BERTScore for Chinese, and the report says so
    assert "no BERTScore" in embedder.describe("zh")["method"]


def test_score_corpus_reports_points_and_notes(embedder: EmbeddingScorer) -> None:
    result = score_corpus(
        [EN_REF, "Nothing in common here."], [EN_REF, EN_REF], language="en", embeddings=embedder
    )
    assert result.per_example[0]["rouge1"] == pytest.approx(100.0)
    assert result.per_example[1]["rouge1"] == pytest.approx(0.0)
    assert result.aggregate["rouge1"] == pytest.approx(50.0)
    assert result.per_example[0]["bertscore_f1"] == pytest.approx(100.0, abs=0.01)
    assert {"rouge", "bleu", "embedding"} <= set(result.notes)
    assert "tok:13a" in result.notes["bleu"]
    zh = score_corpus([ZH_REF], [ZH_REF], language="zh")
    assert zh.aggregate["rouge1"] == pytest.approx(100.0)
    assert "tok:zh" in zh.notes["bleu"]
