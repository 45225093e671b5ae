"""Generation with transformers (and unsloth's patched models): batched, left-padded, with banned
token sequences and stop strings."""
from __future__ import annotations

import time

from kit.generation.banned import banned_sequences
from kit.generation.base import Generation, Sampling, batches_by_budget


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


class HFGenerator:
    """A transformers model (with its LoRA adapter) answering prompts in batches of similar budget."""
    backend = "hf"

    def __init__(self, model: str, adapter: str | None, sampling: Sampling, bans=(), stops=(),
                 batch_size: int = 8, load_in_4bit: bool = False):
        from kit.models import load_for_generation

        self.model, self.tokenizer = load_for_generation(model, adapter, self.backend, load_in_4bit)
        self.sampling, self.stops, self.batch_size = sampling, list(stops), batch_size
        self.bad_words = banned_sequences(self.tokenizer, list(bans)) if bans else []

    def generate(self, prompts: list[str], budgets: list[int], on_batch=None) -> list[Generation]:
        """One Generation per prompt, in order; on_batch(indices, generations, seconds) after each
        batch, so a caller can save as it goes."""
        from dataclasses import replace

        from tqdm import tqdm

        results = [None] * len(prompts)
        with tqdm(total=len(prompts), desc="generate", unit="task") as bar:
            for batch in batches_by_budget(prompts, budgets, self.batch_size):
                tick = time.perf_counter()
                generations = generate_batch(self.model, self.tokenizer, [prompts[i] for i in batch],
                                             replace(self.sampling, max_new_tokens=budgets[batch[0]]),
                                             self.bad_words, self.stops)
                for i, generation in zip(batch, generations):
                    results[i] = generation
                if on_batch is not None:
                    on_batch(batch, generations, time.perf_counter() - tick)
                bar.update(len(batch))
        return results


class UnslothGenerator(HFGenerator):
    """The same loop over unsloth's model (FastLanguageModel.for_inference): GPU only."""
    backend = "unsloth"
