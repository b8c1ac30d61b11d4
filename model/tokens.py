"""A fast token estimator for window budgets.

Windowing a million messages must take seconds, so running the model's real tokenizer on every line is
out of the question; and the bot should not need a model loaded just to list windows. This heuristic
approximates byte-level BPE vocabularies (Qwen2.5, Llama, SmolLM2):

* ASCII text: about one token per word, plus one per extra 6 characters of long words, one per
  punctuation mark, one per digit group;
* CJK ideographs, kana and hangul: about one token per character;
* other non-ASCII letters (Cyrillic, Greek, accented Latin…): about one token per 2.5 characters;
* emoji and other symbols outside the BMP: about two tokens each.

Calibration is documented in ``ESTIMATE_ERROR`` below.
"""

from __future__ import annotations

import re

# Word-ish runs, digits, and single punctuation marks, for the ASCII fast path.
_ASCII_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]")
# CJK Unified Ideographs (+ext A), compatibility ideographs, kana, hangul, CJK punctuation, full-width forms.
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")

ESTIMATE_ERROR = "not yet calibrated"


def _ascii_tokens(text: str) -> int:
    tokens = 0
    for piece in _ASCII_PIECES.findall(text):
        n = len(piece)
        if n <= 6:
            tokens += 1
        elif piece[0].isdigit():
            tokens += (n + 2) // 3
        else:
            tokens += 1 + (n - 1) // 6
    return tokens


def estimate_tokens(text: str) -> int:
    """Approximate the number of BPE tokens of ``text`` (never negative; 0 only for empty text)."""
    if not text:
        return 0
    if text.isascii():
        return max(1, _ascii_tokens(text))
    cjk = len(_CJK.findall(text))
    astral = len(_ASTRAL.findall(text))
    ascii_part = "".join(ch for ch in text if ch < "\x80")
    other = len(text) - len(ascii_part) - cjk - astral
    return max(1, _ascii_tokens(ascii_part) + cjk + 2 * astral + (other * 2 + 4) // 5)
