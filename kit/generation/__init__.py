"""Generation behind one interface: a generator answers prompts with their token budgets.

    generator = make_generator("auto", tasks=100, model=..., adapter=..., sampling=Sampling(), ...)
    generations = generator.generate(prompts, budgets, on_batch=save)   # [Generation], in order

base     Sampling, Generation, answer cleaning, batches by budget
banned   banned strings as every token sequence that spells them
hf       HFGenerator (transformers + peft), UnslothGenerator (unsloth's patched model)
vllm     VLLMGenerator and the pure functions that build vllm's arguments
"""
from __future__ import annotations

from kit.generation.banned import banned_sequences
from kit.generation.base import Generation, Sampling, clean_answer
from kit.generation.hf import generate_batch

__all__ = ["Generation", "Sampling", "banned_sequences", "choose_backend", "clean_answer", "generate_batch",
           "make_generator"]

VLLM_MIN_TASKS = 20  # below this, vllm's start-up (graph capture) costs more than it saves


def choose_backend(requested: str, tasks: int, temperature: float = 0.0) -> str:
    """auto: vllm on a GPU for VLLM_MIN_TASKS or more tasks when it imports (and the temperature
    is one vllm accepts), else as training chooses (unsloth on a GPU, hf elsewhere)."""
    from kit.models import require, resolve_backend

    if requested == "vllm":
        require("vllm")
        return "vllm"
    if requested == "auto" and tasks >= VLLM_MIN_TASKS and temperature <= 2:
        import torch

        if torch.cuda.is_available():
            try:
                import vllm  # noqa: F401

                print("backend: vllm")
                return "vllm"
            except Exception as err:
                print(f"backend: vllm unavailable ({type(err).__name__}); trying the others")
    return resolve_backend(requested)


def make_generator(backend: str, model: str, adapter: str | None, sampling: Sampling, bans=(), stops=(),
                   batch_size: int = 8, load_in_4bit: bool = False, max_model_len: int = 8192,
                   seed: int = 0):
    """A loaded generator for a resolved backend (hf, unsloth or vllm)."""
    if backend == "vllm":
        from kit.generation.vllm import VLLMGenerator

        return VLLMGenerator(model, adapter, sampling, bans, stops, load_in_4bit, max_model_len, seed)
    from kit.generation.hf import HFGenerator, UnslothGenerator

    generator = UnslothGenerator if backend == "unsloth" else HFGenerator
    return generator(model, adapter, sampling, bans, stops, batch_size, load_in_4bit)
