"""Generation shared by infer.py, the judge and the benchmarks: batched greedy/sampled generation
with left padding, banned-token sequences built from strings, and answer cleaning."""
from __future__ import annotations

from dataclasses import dataclass, fields


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each vocabulary id spells (None for special tokens): byte-level BPE pieces
    through GPT-2's byte alphabet, sentencepiece pieces with ▁ as a space and <0xNN> bytes."""
    vocab = tokenizer.get_vocab()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and type(backend.decoder).__name__ == "ByteLevel"
    byte_of = _bytelevel_table() if byte_level else {}
    special = set(tokenizer.all_special_ids)
    result = [None] * (max(vocab.values()) + 1)
    for piece, index in vocab.items():
        if index in special:
            continue
        if byte_level:
            result[index] = bytes(byte_of[c] for c in piece if c in byte_of)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            result[index] = bytes([int(piece[3:5], 16)])
        else:
            result[index] = piece.replace("\u2581", " ").encode("utf-8")
    return result


def _bytelevel_table() -> dict:
    """GPT-2's printable stand-ins for the 256 byte values, inverted."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    stand_ins, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_ins[chr(byte)] = byte
        else:
            stand_ins[chr(256 + extra)] = byte
            extra += 1
    return stand_ins


def banned_sequences(tokenizer, banned: list[str], limit: int = 512) -> list[list[int]]:
    """Every token sequence that spells a banned string (alone, or after a space or newline),
    and every single token that contains one."""
    pieces = token_bytes(tokenizer)
    by_first = {}
    for index, piece in enumerate(pieces):
        if piece:
            by_first.setdefault(piece[0], []).append((index, piece))
    sequences = set()
    for word in banned:
        target = word.encode("utf-8")
        for variant in (target, b" " + target, b"\n" + target):
            stack = [(0, ())]
            while stack and len(sequences) < limit * len(banned):
                position, prefix = stack.pop()
                if position == len(variant):
                    sequences.add(prefix)
                    continue
                for index, piece in by_first.get(variant[position], ()):
                    if variant.startswith(piece, position):
                        stack.append((position + len(piece), prefix + (index,)))
        sequences.update((index,) for index, piece in enumerate(pieces) if piece and target in piece)
    return [list(s) for s in sorted(sequences)]


def clean_answer(text: str, stops, markers, cut_after: str | None) -> str:
    if cut_after and cut_after in text:
        text = text.split(cut_after, 1)[1]
    for stop in stops:
        text = text.split(stop, 1)[0]
    for marker in markers:
        text = text.replace(marker, "")
    return text.strip()


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by infer.py and the judge: greedy unless do_sample."""
    max_new_tokens: int = 1024
    repetition_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50

    @classmethod
    def from_args(cls, args) -> "Sampling":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class Generation:
    text: str
    new_tokens: int  # up to and including EOS, padding not counted
    stop_reason: str  # "eos", "stop_string" or "length" (cut off at max_new_tokens)


def generate_batch(model, tokenizer, prompts: list[str], sampling: Sampling, bad_words=(),
                   stops=()) -> list[Generation]:
    """One Generation per prompt, generated together with left padding."""
    import torch

    encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    settings = dict(max_new_tokens=sampling.max_new_tokens,
                    repetition_penalty=sampling.repetition_penalty, do_sample=sampling.do_sample,
                    pad_token_id=tokenizer.pad_token_id, bad_words_ids=list(bad_words) or None,
                    stop_strings=list(stops) or None, tokenizer=tokenizer)
    if sampling.do_sample:
        settings.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    else:
        settings.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        output = model.generate(**encoded, **settings)
    new = output[:, encoded.input_ids.shape[1]:].tolist()
    texts = tokenizer.batch_decode(output[:, encoded.input_ids.shape[1]:], skip_special_tokens=True)
    results = []
    for row, text in zip(new, texts):
        length, reason = len(row), "length"
        for i, token in enumerate(row):
            if token == tokenizer.eos_token_id:
                length, reason = i + 1, "eos"
                break
            if token == tokenizer.pad_token_id:  # this row ended on a stop string, then padding
                length, reason = i, "stop_string"
                break
        if reason != "eos" and any(stop in text for stop in stops):
            reason = "stop_string"
        results.append(Generation(text, length, reason))
    return results
