"""Which language a chat is written in, so the summary comes back in that language.

A character-class count is enough for what the product needs (English and Chinese first-class, a few
other scripts recognised so that they are at least not mistaken for English) and costs nothing:
no model, no download, deterministic. Chinese text is dense (one character is a word or half of one)
while Latin words are several letters, so CJK characters are weighted against Latin *words*, not letters;
a Chinese chat sprinkled with English product names still reads as Chinese.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

#: Languages whose instructions and examples ship with the prompts; others get English instructions
#: plus an explicit "write in <language>".
FIRST_CLASS: tuple[str, ...] = ("en", "zh")

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
    "ar": "Arabic",
}

_LATIN_WORD = re.compile(r"[A-Za-zÀ-ɏ]+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"[@#][\w.-]+")


def _script_counts(text: str) -> dict[str, float]:
    text = _MENTION.sub(" ", _URL.sub(" ", text))
    counts = {"han": 0.0, "kana": 0.0, "hangul": 0.0, "cyrillic": 0.0, "arabic": 0.0, "latin": 0.0}
    counts["latin"] = float(len(_LATIN_WORD.findall(text)))
    for ch in text:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:
            counts["han"] += 1
        elif 0x3040 <= o <= 0x30FF:
            counts["kana"] += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
            counts["hangul"] += 1
        elif 0x0400 <= o <= 0x04FF:
            counts["cyrillic"] += 1
        elif 0x0600 <= o <= 0x06FF:
            counts["arabic"] += 1
    # Cyrillic and Arabic letters are alphabetic like Latin ones: count them per word-ish unit too.
    counts["cyrillic"] /= 5.0
    counts["arabic"] /= 5.0
    # Two Han characters carry about what one English word does.
    counts["han"] /= 2.0
    counts["kana"] /= 2.0
    counts["hangul"] /= 2.0
    return counts


def detect_language(texts: str | Iterable[str], *, default: str = "en") -> str:
    """Return an ISO 639-1 code (``en``, ``zh``, ``ja``, ``ko``, ``ru``, ``ar``) for the dominant script.

    Japanese is told from Chinese by kana: a Japanese text that is mostly kanji still has kana in it,
    and a Chinese one has none. Returns ``default`` when there is nothing to go on (emoji, numbers).
    """
    joined = texts if isinstance(texts, str) else "\n".join(texts)
    counts = _script_counts(unicodedata.normalize("NFKC", joined))
    total = sum(counts.values())
    if total == 0:
        return default
    cjk = counts["han"] + counts["kana"]
    if counts["kana"] >= 0.1 * max(cjk, 1e-9) and counts["kana"] > 0 and cjk >= 0.3 * total:
        return "ja"
    if counts["hangul"] >= 0.3 * total:
        return "ko"
    if counts["han"] >= 0.3 * total:
        return "zh"
    if counts["cyrillic"] >= 0.4 * total:
        return "ru"
    if counts["arabic"] >= 0.4 * total:
        return "ar"
    return "en" if counts["latin"] > 0 else default


def resolve_language(setting: str, texts: Iterable[str]) -> str:
    """Apply the config: ``auto`` detects from the chat; anything else is forced (zh-CN → zh)."""
    if setting and setting != "auto":
        return normalize_language(setting)
    return detect_language(texts)


def normalize_language(code: str) -> str:
    """Reduce a locale such as ``zh-Hans`` or ``en_US`` to the two-letter code the prompts are keyed by."""
    base = code.strip().replace("_", "-").split("-")[0].lower()
    if not base.isalpha() or not 2 <= len(base) <= 3:
        raise ValueError(f"not a language code: {code!r} (expected e.g. 'en' or 'zh')")
    return base


def language_name(code: str) -> str:
    """English name of the language, for the "write in <language>" instruction."""
    return LANGUAGE_NAMES.get(code, code)
