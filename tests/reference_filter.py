"""The seed's filter rules written the straightforward way: every NG word tested with `in` on
every record. The fast path in filter_data.py must give exactly the same output."""
import re
from collections import Counter

import pycld2

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
