"""The kit's library: what more than one stage script (or the tests and benchmarks) needs.

io              errors and one-line exits, atomic writes, JSONL/JSON/YAML, the QA-pair reader
readers         records from JSONL, JSON, parquet, CSV or a Hub dataset, with their line numbers
settings        one settings mechanism: dataclasses, defaults < --config YAML < flags, --help
stage_settings  FilterSettings, TrainSettings, InferSettings, QuantizeSettings
runs            where a run's files live (RunDir, AnswerDir, ResultsDir), task keys, run names
models          backend choice, model and adapter checks, loading, LoRA, 4-bit config, memory
hub             the Hub token and folder pushes
generation/     one generator interface over hf, unsloth and vllm; banned strings; cleaning
answers         an inference run's answers: progress file, resume by settings, the final output
training        train's settings with SFTConfig, resolved config, callbacks, metrics, loss plot
tracking        wandb: offline by default, a score joined to its training run
sweep           a grid of trials: train, answer and judge each (train.py --sweep)
tasks           the competition's task files, the output.jsonl validator, the overlap guard
judging/        the judge: settings, backends, scoring, statistics, agreement
trials          the trial table and its plot (python -m kit.trials)
text            pycld2 language shares that never raise, a repetition measure
tiny            tiny Gemma-2 and ColBERT checkpoints for the demo and tests (python -m kit.tiny)
doctor          checks a machine for the GPU path (python -m kit.doctor)
testing/        test and benchmark helpers: a stub OpenAI server, the filter's reference oracle
"""
import logging

# A known-harmless library notice, silenced for every command: bitsandbytes' CPU backend asks for
# the optional `kernels` package each time it is imported on a CPU with AVX512-BF16.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
