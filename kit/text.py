"""Text checks shared by the filter and the judge: pycld2 language detection that never raises on
odd code points, and a repetition measure."""
from __future__ import annotations

import re

import pycld2

# Every code point that makes pycld2 raise (found by trying all 0x110000): C0/C1 controls other
# than tab/newline/CR/FF, lone surrogates, and the Unicode noncharacters (U+FDD0-U+FDEF and the
# last two of each plane). They are removed for detection only; the stored text keeps them.
CLD2_UNSAFE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                         + "".join(f"\\U{p:04x}fffe\\U{p:04x}ffff" for p in range(17)) + "]")


SURROGATES = re.compile("[\ud800-\udfff]")


def tokenizable(text: str) -> str:
    """Lone surrogates (valid in JSON, not in UTF-8) as U+FFFD, so a tokenizer can read the text;
    the task's own input is kept as it was everywhere else."""
    return SURROGATES.sub("\ufffd", text)


def sanitize_for_cld2(text: str) -> str:
    return CLD2_UNSAFE.sub("", text)


def cld2_details(text: str) -> tuple:
    """pycld2's top languages as (name, code, percent, score) tuples; sanitized on a retry, so only
    text it cannot classify at all raises pycld2.error."""
    try:
        return pycld2.detect(text)[2]
    except (pycld2.error, ValueError):  # ValueError: surrogates cannot be encoded
        return pycld2.detect(sanitize_for_cld2(text))[2]


def non_japanese_share(text: str) -> float:
    """1 - pycld2's Japanese share of the text (0 for text too short or odd to classify)."""
    try:
        details = cld2_details(text)
    except pycld2.error:
        return 0.0
    known = [(code, percent) for _, code, percent, _ in details if code != "un"]
    if not known:
        return 0.0
    return round(1 - sum(percent for code, percent in known if code == "ja") / 100, 3)


def repetition_share(text: str, n: int = 10) -> float:
    """Share of the text's character n-grams that repeat an earlier one (0: none, near 1: a loop)."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return round(1 - len(set(grams)) / len(grams), 3)
