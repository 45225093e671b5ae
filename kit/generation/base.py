"""What every generator shares: decoding settings, a generation's record, answer cleaning, and
the grouping of prompts into batches by their token budget."""
from __future__ import annotations

from dataclasses import dataclass, fields


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
    def from_settings(cls, settings) -> Sampling:
        """The decoding fields of any settings object that has them (InferSettings)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class Generation:
    text: str
    new_tokens: int  # up to and including EOS, padding not counted
    stop_reason: str  # "eos", "stop_string" or "length" (cut off at max_new_tokens)


def batches_by_budget(prompts: list[str], budgets: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most batch_size that share one token budget, longest
    budgets and prompts first: similar lengths share a batch, and a task whose budget was shrunk
    to fit goes with its like."""
    order = sorted(range(len(budgets)), key=lambda i: (-budgets[i], -len(prompts[i])))
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    return [[i for i in batch if budgets[i] == budget] for batch in batches
            for budget in sorted({budgets[i] for i in batch}, reverse=True)]
