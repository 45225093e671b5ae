"""The filter's oracle, for its tests and benchmark: generated magpie-shaped corpora with planted
contaminations, and the seed's rules written the straightforward way (every NG word tested with
`in` on every record). The fast path in filter_data.py must give exactly the same output."""
import json
import random
import re
from collections import Counter
from pathlib import Path

import pycld2

ROOT = Path(__file__).resolve().parents[2]


def _sentences() -> list[str]:
    sentences = []
    for line in (ROOT / "data" / "sample_reference_qa.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for text in (record["input"], record["output"]):
            sentences.extend(s + "。" for s in text.replace("？", "。").split("。") if s)
    return sentences


# (kind, text) planted into a field; each exercises a different rule of filter_ja.yaml.
PLANTS = [
    ("chinese", "这个问题很简单"), ("hangul", "안녕하세요"), ("cyrillic", "спасибо"),
    ("url", "https://example.com/page"), ("fence", "```python\nprint(1)\n```"),
    ("accent", "café"), ("romaji", " - Arigatou "), ("language_name", "フランス語では"),
    ("translate", "英語に翻訳して"), ("replace", "アイシテル"), ("replace", "♪"),
    ("replace_then_ng", "変換器モデル"), ("control", "\x00\x07"), ("nonchar", "\ufffe"),
    ("surrogate", "\ud800"), ("english", " This sentence is written entirely in English and keeps going. " * 4),
]
RARE_POOL = [chr(c) for c in range(0x4E00, 0x9FFF)]  # CJK ideographs, most of them rare here


def make_corpus(n: int, seed: int = 0, target_chars: int = 280, plant_rate: float = 0.08,
                rare_rate: float = 0.3) -> list[dict]:
    """n magpie records of ~target_chars response characters (~1 KB of JSON each)."""
    rng = random.Random(seed)
    sentences = _sentences()
    records = []
    for _ in range(n):
        instruction = "".join(rng.choice(sentences) for _ in range(rng.randint(1, 2)))
        response_parts = []
        while sum(map(len, response_parts)) < target_chars:
            response_parts.append(rng.choice(sentences))
        response = "".join(response_parts)
        if rng.random() < plant_rate:
            kind, text = rng.choice(PLANTS)
            where = rng.random()
            if where < 0.5:
                response = response[:50] + text + response[50:]
            else:
                instruction = text + instruction
        if rng.random() < rare_rate:
            position = rng.randrange(len(response))
            response = response[:position] + rng.choice(RARE_POOL) + response[position:]
        turns = [{"role": "system", "content": "あなたは親切なアシスタントです。"},
                 {"role": "user", "content": instruction}]
        roll = rng.random()
        if roll < 0.01:
            pass  # no assistant turn: response is ""
        elif roll < 0.02:
            turns.append({"role": "assistant", "content": ""})
        else:
            turns.append({"role": "assistant", "content": response})
        if rng.random() < 0.01:
            records.append({"instruction": instruction, "response": response})  # flat record
        else:
            records.append({"conversations": turns})
    return records


def write_corpus(path: Path, records: list[dict]) -> Path:
    # surrogates can't be encoded: write them as JSON escapes, which json.loads reads back
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            line = json.dumps(record, ensure_ascii=False)
            handle.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n"
                         if any(0xD800 <= ord(c) <= 0xDFFF for c in line) else line + "\n")
    return path


UNSAFE = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                    + "".join(f"\\U{p:04x}fffe\\U{p:04x}ffff" for p in range(17)) + "]")


def to_pair(record):
    if "conversations" in record:
        user = next((t["content"] for t in record["conversations"] if t["role"] == "user"), "")
        assistant = next((t["content"] for t in record["conversations"] if t["role"] == "assistant"), "")
        return {"instruction": user, "response": assistant}
    if "instruction" in record:
        return {"instruction": record["instruction"], "response": record.get("response", "")}
    return {"instruction": record["input"], "response": record.get("output", "")}


def detect_ok(text, languages, threshold):
    for _, code, percent, _ in pycld2.detect(UNSAFE.sub("", text))[2]:
        if code in languages and percent >= threshold:
            return True
    return False


def reference_filter(records, config):
    dataset = [to_pair(r) for r in records]
    dataset = [d for d in dataset if d["instruction"] or d["response"]]
    tot_text = []
    for text in dataset:
        tot_text.append(text["response"] + " " + text["instruction"])
    ng_list = list(config["ng_words"])
    if config["rare_char_max_count"] is not None:
        for char, count in Counter("".join(tot_text)).most_common():
            if count <= config["rare_char_max_count"]:
                ng_list.append(char)
    filtered = []
    for text in dataset:
        for key, value in config["replace"].items():
            text["response"] = text["response"].replace(key, value)
            text["instruction"] = text["instruction"].replace(key, value)
        remove = False
        for ng_word in ng_list:
            if ng_word in text["response"] or ng_word in text["instruction"]:
                remove = True
        for ng_word in config["instruction_ng_words"]:
            if ng_word in text["instruction"]:
                remove = True
        if remove:
            continue
        if (detect_ok(text["instruction"], config["languages"], config["min_language_percent"])
                and detect_ok(text["response"], config["languages"], config["min_language_percent"])):
            filtered.append(text)
    if config["second_pass_rare_char_max_count"] is not None:
        counts = Counter("".join(t["response"] + " " + t["instruction"] for t in filtered))
        ng_list = [c for c, n in counts.most_common() if n <= config["second_pass_rare_char_max_count"]]
        filtered = [t for t in filtered
                    if not any(w in t["response"] or w in t["instruction"] for w in ng_list)]
    return filtered
