"""Banned strings as token sequences: every way a tokenizer can spell a string, so that
`bad_words_ids` blocks the string itself and not one tokenization of it."""
from __future__ import annotations


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
