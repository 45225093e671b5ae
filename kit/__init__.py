"""The kit's library: what more than one stage script (or the tests and benchmarks) needs.

io          errors, atomic writes, JSONL/JSON/YAML, the instruction/response reader
models      backend choice, model loading, LoRA, 4-bit config, Hub push, versions, memory
generation  batched generation, banned-token sequences, answer cleaning
tasks       the competition's task files and the output.jsonl validator
trials      the trial table and its plot (python -m kit.trials)
tiny        tiny Gemma-2 and ColBERT checkpoints for the demo and tests (python -m kit.tiny)
filter_oracle  generated corpora and the naive reference filter, for filter tests and benchmarks
"""
