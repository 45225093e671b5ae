"""Rule flags: what the rubric deducts for that a program can see without a judge. They are
reported beside the judge's score (score.json's flag_counts, `judge.py flags`), never instead of it.

Thresholds were set on real graded answers (ELYZA-tasks-100, four models graded by a reference
judge) and checked on two models left out of that (bench/calibrate_flags.py reproduces the
figures): a flag that fires should mostly mark an answer graded 1-2, and almost never one graded 5.
"""
from __future__ import annotations

import re

# Formulas, code, tables and URLs are not prose: a LaTeX-heavy maths answer is not "English", and
# a table's repeated cells are not a loop.
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]|https?://\S+|^\s*\|.*$",
                       re.S | re.M)
NON_JAPANESE_SHARE = 0.5  # pycld2's non-Japanese share of the prose
NON_JAPANESE_MIN_CHARS = 20  # shorter prose is too little to classify
REPETITION_SHARE = 0.08  # share of the prose's 20-character spans that repeat an earlier one
REPETITION_SPAN = 20
REPLACEMENT_SHARE = 0.05  # U+FFFD: what a tiny or broken model emits for bytes it cannot decode
REFUSAL_WINDOW = 80  # a refusal says so at the start
REFUSING = re.compile(r"できません|いたしかねます|控えさせて|控えます|お断り")  # the phrase must come with a "no"
ASKS_FOR_APOLOGY = re.compile(r"謝|詫|apolog", re.I)  # an apology e-mail's 申し訳ありません is the task
ASKS_FOR_ENGLISH = re.compile(r"英語|英訳|英文|English|翻訳|translate", re.I)


def prose(text: str) -> str:
    return NOT_PROSE.sub(" ", text)


def rule_flags(answer: str, task_input: str = "", generation: dict | None = None) -> dict:
    """{flag: detail} for an answer: empty, replacement_chars, non_japanese, repetition,
    leaked_markers, refusal, truncated (cut off at max_new_tokens, from infer's generations)."""
    from kit.tasks import LEAK_MARKERS
    from kit.text import non_japanese_share, repetition_share
    from prompts import refusal_phrases

    if not answer.strip():
        return {"empty": True}
    flags = {}
    visible = [c for c in answer if not c.isspace()]
    replacement = visible.count("\ufffd") / len(visible)
    if replacement >= REPLACEMENT_SHARE:
        flags["replacement_chars"] = round(replacement, 3)
    text = prose(answer)
    if len(text.strip()) >= NON_JAPANESE_MIN_CHARS and not ASKS_FOR_ENGLISH.search(task_input):
        share = non_japanese_share(text)
        if share >= NON_JAPANESE_SHARE:
            flags["non_japanese"] = share
    repeated = repetition_share(text, REPETITION_SPAN)
    if repeated >= REPETITION_SHARE:
        flags["repetition"] = repeated
    leaked = [m for m in LEAK_MARKERS if m in answer]
    if leaked:
        flags["leaked_markers"] = leaked
    opening = answer.lstrip()[:REFUSAL_WINDOW]
    refusal = next((p for p in refusal_phrases() if p in opening), None)
    if refusal and REFUSING.search(opening) and not ASKS_FOR_APOLOGY.search(task_input):
        flags["refusal"] = refusal
    if generation and generation.get("stop_reason") == "length":
        flags["truncated"] = generation.get("new_tokens")
    return flags
