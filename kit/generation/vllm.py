"""Generation with vllm (GPU only). What the kit passes to vllm is built by pure functions, so it
can be checked without vllm installed: `engine_args` for `LLM`, `sampling_args` for
`SamplingParams`, `lora_args` for `LoRARequest`."""
from __future__ import annotations

import time

from kit.generation.base import Generation, Sampling

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm 0.30's allowed max_lora_rank values


def max_lora_rank(rank: int) -> int:
    """The smallest rank vllm accepts that holds an adapter of this rank (24 → 32)."""
    return next((allowed for allowed in LORA_RANKS if allowed >= rank), rank)


def engine_args(model: str, adapter_rank: int | None, load_in_4bit: bool, max_model_len: int,
                seed: int) -> dict:
    """LLM(**engine_args): bf16, or the base quantized to bitsandbytes 4-bit on load; a merged
    4-bit folder declares its own quantization in its config."""
    args = {"model": model, "seed": seed, "dtype": "bfloat16", "max_model_len": max_model_len}
    if load_in_4bit:
        args["quantization"] = "bitsandbytes"
    if adapter_rank:
        args.update(enable_lora=True, max_lora_rank=max_lora_rank(adapter_rank), max_loras=1)
    return args


def sampling_args(sampling: Sampling, budget: int, stops, bans, seed: int, banned_tokens=()) -> dict:
    """SamplingParams(**sampling_args) for one prompt: greedy at temperature 0. Banned strings:
    vllm's bad_words blocks their plain and space-prefixed tokenization; logit_bias forbids every
    single token that contains one (the kit's banned_sequences of length 1), as the hf path does."""
    args = {"max_tokens": budget, "repetition_penalty": sampling.repetition_penalty,
            "temperature": sampling.temperature if sampling.do_sample else 0.0,
            "top_p": sampling.top_p if sampling.do_sample else 1.0,
            "top_k": sampling.top_k if sampling.do_sample else 0, "stop": list(stops),
            "bad_words": list(bans) or None, "seed": seed}
    if banned_tokens:
        args["logit_bias"] = dict.fromkeys(banned_tokens, -100.0)
    return args


BAN_DIFFERENCE = ("vllm blocks each banned string's plain and space-prefixed tokenization and every "
                  "single token containing it; the hf path also blocks its other multi-token spellings")


def lora_args(adapter: str) -> tuple:
    """LoRARequest(*lora_args): name, a positive integer id, the adapter's folder."""
    return ("adapter", 1, str(adapter))


class VLLMGenerator:
    """One vllm engine for the base model with room for the adapter; all prompts in one call."""
    backend = "vllm"

    def __init__(self, model: str, adapter: str | None, sampling: Sampling, bans=(), stops=(),
                 load_in_4bit: bool = False, max_model_len: int = 8192, seed: int = 0):
        from vllm import LLM

        from kit.generation.banned import banned_sequences
        from kit.models import check_adapter_path

        rank = check_adapter_path(adapter)["r"] if adapter else None
        self.llm = LLM(**engine_args(model, rank, load_in_4bit, max_model_len, seed))
        self.adapter, self.sampling, self.stops, self.bans, self.seed = adapter, sampling, stops, bans, seed
        sequences = banned_sequences(self.llm.get_tokenizer(), list(bans)) if bans else []
        self.banned_tokens = sorted({s[0] for s in sequences if len(s) == 1})

    def generate(self, prompts: list[str], budgets: list[int], on_batch=None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = [SamplingParams(**sampling_args(self.sampling, budget, self.stops, self.bans, self.seed,
                                                 self.banned_tokens)) for budget in budgets]
        lora = LoRARequest(*lora_args(self.adapter)) if self.adapter else None
        tick = time.perf_counter()
        outputs = self.llm.generate(prompts, params, lora_request=lora)
        # finish_reason "length" at max_tokens; stop_reason: the stop string, an EOS id or None
        results = [Generation(o.outputs[0].text, len(o.outputs[0].token_ids),
                              "length" if o.outputs[0].finish_reason == "length" else
                              "stop_string" if isinstance(o.outputs[0].stop_reason, str) else "eos")
                   for o in outputs]
        if on_batch is not None:
            on_batch(list(range(len(prompts))), results, time.perf_counter() - tick)
        return results
