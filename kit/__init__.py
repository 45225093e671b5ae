"""The kit's library: what more than one stage script (or the tests and benchmarks) needs.

io          errors, atomic writes, JSONL/JSON/YAML, the instruction/response reader
models      backend choice, model loading, LoRA, 4-bit config, Hub push, versions, memory
generation  batched generation, banned-token sequences, answer cleaning
tasks       the competition's task files and the output.jsonl validator
trials      the trial table and its plot (python -m kit.trials)
tiny        tiny Gemma-2 and ColBERT checkpoints for the demo and tests (python -m kit.tiny)
filter_oracle  generated corpora and the naive reference filter, for filter tests and benchmarks
judging     judge backends, rule flags, cache, score files and statistics (judge.py, infer --judge)
text        pycld2 language shares that never raise, a repetition measure
stub_openai a scripted OpenAI-compatible server on 127.0.0.1 (judge tests and benchmark)
doctor      checks a machine for the GPU path (python -m kit.doctor)
stub_wheels stand-in wheels for what a registry mirror lacks (make check-gpu-resolution)
"""
import logging

# A known-harmless library notice, silenced for every command: bitsandbytes' CPU backend asks for
# the optional `kernels` package each time it is imported on a CPU with AVX512-BF16.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
