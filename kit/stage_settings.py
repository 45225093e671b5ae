"""The settings of each stage, one dataclass each, parsed by kit.settings (defaults < --config
YAML < flags). `check()` says everything wrong that can be seen without loading a model or
importing torch. The judge's settings live with the judge (kit.judging.settings)."""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from kit.io import KitError, check_output
from kit.settings import existing_file, opt, range_problems

ROOT = Path(__file__).resolve().parents[1]
FILTER_RULES = ROOT / "configs" / "filter_ja.yaml"


def check_template(name: str) -> None:
    from prompts import TemplateError, load_template

    try:
        load_template(name)
    except TemplateError as err:
        raise KitError(str(err)) from None


def fail_on(problems: list[str]) -> None:
    if problems:
        raise KitError("; ".join(problems))


@dataclass
class FilterSettings:
    """filter_data.py: what to read and write"""
    input: str = opt(None, ".jsonl/.json/.parquet file or a Hub dataset name", required=True)
    output: str = opt(None, "the filtered JSONL to write", required=True)
    extra: list[str] = opt([], "QA file appended to the output after filtering (repeatable)", repeatable=True)
    filter_extra: bool = opt(False, "send --extra files through the filter instead of around it")
    skip_bad_lines: bool = opt(False, "count and skip lines that are not valid JSON")
    workers: int = opt(min(2, multiprocessing.cpu_count()), "processes for large inputs")
    replace: dict = opt({}, "old text → new text, in order", config_only=True)
    ng_words: list[str] = opt([], "drop a record whose instruction or response contains one")
    instruction_ng_words: list[str] = opt([], "the same, on the instruction only")
    languages: list[str] = opt(["ja"], "pycld2 codes a field must be written in")
    min_language_percent: float = opt(60.0, "pycld2's share for those languages, both fields")
    rare_char_max_count: int | None = opt(19, "characters seen at most this often are NG (negative: off)")
    second_pass_rare_char_max_count: int | None = opt(9, "the same over the survivors (negative: off)")
    rare_char_per_million: float | None = opt(None, "relative first pass: at most this often per "
                                                    "million characters (replaces the count)")
    second_pass_rare_char_per_million: float | None = opt(None, "relative second pass")
    dedup: bool = opt(False, "drop exact repeats of (instruction, response)")
    min_chars: int | None = opt(None, "shortest instruction and response kept")
    max_chars: int | None = opt(None, "longest instruction and response kept")

    def check(self) -> None:
        for name in ("rare_char_max_count", "second_pass_rare_char_max_count"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                setattr(self, name, None)  # negative turns the pass off
        problems = range_problems(self, [("workers", 1)])
        if not 0 <= self.min_language_percent <= 100:  # also false for nan
            problems.append(f"min_language_percent must be a number from 0 to 100 (got {self.min_language_percent})")
        for name in ("rare_char_per_million", "second_pass_rare_char_per_million"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                problems.append(f"{name} must be a number >= 0 (got {getattr(self, name)})")
        for name in ("ng_words", "instruction_ng_words", "languages"):
            if not all(getattr(self, name)):
                problems.append(f"{name} must be non-empty strings")
        if not all(isinstance(k, str) and k for k in self.replace):
            problems.append("replace keys must be non-empty strings")
        fail_on(problems)
        self.replace = {k: "" if v is None else str(v) for k, v in self.replace.items()}
        if Path(self.input).is_dir():
            raise KitError(f"--input {self.input} is a folder; give a .jsonl, .json or .parquet file "
                           "(or a Hub dataset name such as llm-jp/magpie-sft-v1.0)")
        for extra in self.extra:
            existing_file(extra, "--extra")
        check_output(self.output, {"--input": self.input, **{f"--extra {e}": e for e in self.extra}})
        check_output(f"{self.output}.report.json", {"--input": self.input}, "--output's report")


@dataclass
class TrainSettings:
    """train.py: the kit's own options (every SFTConfig field works too)"""
    model_name_or_path: str = opt("google/gemma-2-27b", "base model (name or folder)")
    data_files: list[str] = opt([], "instruction/response JSONL files")
    eval_file: str | None = opt(None, "held-out JSONL for eval loss")
    val_size: float = opt(0.0, "hold out this fraction (< 1) or count of the data for eval loss")
    template: str = opt("alpaca_ja", "prompt template in prompts/templates.yaml")
    loss_on: str = opt("completion", "loss on the response only, or the full text (the seed's)",
                       choices=("completion", "full"))
    overlong: str = opt("truncate", "examples longer than max_length", choices=("truncate", "drop"))
    backend: str = opt("auto", "auto: unsloth on a CUDA GPU, else hf", choices=("auto", "hf", "unsloth"))
    load_in_4bit: bool = opt(False, "QLoRA: nf4 + double quant base")
    lora_r: int = opt(64, "LoRA rank")
    lora_alpha: int = opt(64, "LoRA alpha")
    lora_dropout: float = opt(0.0, "LoRA dropout")
    lora_target_modules: list[str] | None = opt(None, "default: every linear projection")
    results_dir: str = opt("results", "runs write results/<run>/")
    data_licenses: list[str] = opt([], "for the model card")
    synthetic_data_models: list[str] = opt([], "models that generated the data (model card)")
    overwrite: bool = opt(False, "train a finished run again")
    sweep: list[str] = opt([], "a grid of trials: key=v1,v2 ...")
    score: str | None = opt(None, "with --sweep: answer and judge each trial (infer + judge YAML)")
    push_adapter_to: str | None = opt(None, "Hub repo for the adapter; token from HF_TOKEN")

    def check(self) -> None:
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise KitError(f"lora_r and lora_alpha must be positive integers (got {self.lora_r}, "
                           f"{self.lora_alpha})")
        fail_on([f"val_size must be 0 or more (got {self.val_size})"] if not self.val_size >= 0 else [])
        check_template(self.template)
        if self.score and not self.sweep:
            raise KitError("--score answers and judges the trials of a sweep: add --sweep key=v1,v2 "
                           "(or, for one run, infer.py --judge CONFIG after training)")
        if self.score:
            existing_file(self.score, "--score")
        if self.sweep:
            return  # each trial checks its own data and model in its own process
        if not self.data_files:
            raise KitError("no training data: pass --data_files FILE [FILE ...]")
        for path in self.data_files + ([self.eval_file] if self.eval_file else []):
            existing_file(path, "--data_files" if path != self.eval_file else "--eval_file")
        from kit.models import check_model_path

        check_model_path(self.model_name_or_path, "--model_name_or_path")
        if self.push_adapter_to:
            from kit.hub import hub_token

            if not hub_token():
                raise KitError("--push_adapter_to needs HF_TOKEN in the environment (or `hf auth login`)")


@dataclass
class InferSettings:
    """infer.py: model, tasks, retrieval and generation"""
    model: str = opt(None, "base model (name or folder)", required=True)
    adapter: str | None = opt(None, "LoRA adapter folder, e.g. results/<run>/adapter")
    tasks: str = opt(None, "task file (JSONL, CSV, parquet) or a Hub dataset name", required=True)
    reference: str | None = opt(None, "reference QA JSONL for few-shot examples")
    k: int = opt(20, "few-shot examples per task")
    retriever: str | None = opt(None, "default: colbert with --retriever_model, else bm25",
                                choices=("bm25", "colbert"))
    retriever_model: str | None = opt(None, "ColBERT checkpoint, e.g. bclavie/JaColBERTv2")
    template: str | None = opt(None, "default: the adapter run's template, else alpaca_ja")
    output: str | None = opt(None, "the submission file to write (default: output.jsonl in the run's "
                                   "answers folder, printed at the end)")
    csv: str | None = opt(None, "also write task_id,input,output as CSV here")
    backend: str = opt("auto", "auto: vllm on a GPU for 20+ tasks, else unsloth on a GPU, else hf",
                       choices=("auto", "hf", "unsloth", "vllm"))
    load_in_4bit: bool = opt(False, "load the base in bitsandbytes nf4")
    batch_size: int = opt(8, "prompts generated together")
    max_new_tokens: int = opt(1024, "longest answer, in tokens")
    context_length: int | None = opt(None, "default: the model's max_position_embeddings")
    repetition_penalty: float = opt(1.1, "1.0 is none")
    do_sample: bool = opt(False, "sample instead of greedy decoding")
    temperature: float = opt(1.0, "when sampling")
    top_p: float = opt(1.0, "when sampling")
    top_k: int = opt(50, "when sampling")
    seed: int = opt(3407, "random seed")
    ban: list[str] = opt([], "string never to generate (repeatable)", repeatable=True)
    stop: list[str] = opt([], "string that ends an answer (repeatable)", repeatable=True)
    cut_after: str | None = opt(None, "keep only the text after this marker")
    limit: int | None = opt(None, "answer only the first N tasks (for timing)")
    dry_run: bool = opt(False, "write prompts.jsonl, load no model")
    resume: bool = opt(False, "keep the answers already in --output, generate the rest")
    results_dir: str = opt("results", "where the run's prompts, generations and metrics go")
    run_name: str | None = opt(None, "default: the adapter's run, else infer-<model>")
    judge: str | None = opt(None, "score the answers with the judge settings in this YAML")

    def check(self) -> None:
        problems = range_problems(self, [("batch_size", 1), ("max_new_tokens", 1), ("k", 0), ("limit", 1),
                                         ("context_length", 1), ("top_k", 1)])
        if not self.repetition_penalty > 0:
            problems.append(f"--repetition_penalty must be > 0 (got {self.repetition_penalty})")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            problems.append("--temperature must be > 0 and --top_p in (0, 1] when sampling")
        if self.backend == "vllm" and self.do_sample and self.temperature > 2:
            problems.append("vllm accepts --temperature up to 2 (use --backend hf above that)")
        if any(not text for text in self.ban + self.stop) or self.cut_after == "":
            problems.append("--ban, --stop and --cut_after take non-empty strings")
        fail_on(problems)
        if self.template:
            check_template(self.template)
        from kit.models import check_adapter_path, check_model_path

        check_model_path(self.model, "--model")
        if self.adapter:
            check_adapter_path(self.adapter)
        for path, flag in ((self.reference, "--reference"), (self.judge, "--judge")):
            existing_file(path, flag)
        inputs = {"--tasks": self.tasks, "--reference": self.reference, "--model": self.model,
                  "--adapter": self.adapter, "--judge": self.judge}
        if self.output:
            check_output(self.output, inputs)
        if self.csv:
            check_output(self.csv, {**inputs, "--output": self.output or ""}, "--csv")


@dataclass
class QuantizeSettings:
    """quantize_push.py: what to quantize, merge and push"""
    model: str | None = opt(None, "base model: Hub name or folder")
    output: str | None = opt(None, "folder to write")
    adapter: str | None = opt(None, "merge this LoRA adapter (results/<run>/adapter) first")
    no_quantize: bool = opt(False, "merge mode: save the bf16 merge instead of 4-bit")
    quant_type: str = opt("nf4", "bitsandbytes 4-bit type", choices=("nf4", "fp4"))
    double_quant: bool = opt(True, "quantize the quantization constants too")
    compute_dtype: str = opt("bfloat16", "4-bit compute dtype", choices=("bfloat16", "float16", "float32"))
    merge_dtype: str = opt("bfloat16", "dtype of the base for the merge",
                           choices=("bfloat16", "float16", "float32"))
    logit_tolerance: float = opt(0.5, "largest |merged - base+adapter| next-token logit difference "
                                      "(bf16 rounding of gemma-2's softcapped logits is ~0.1)")
    push_to: str | None = opt(None, "Hub repo id to create and upload to")
    private: bool = opt(False, "make the Hub repo private")
    push_only: str | None = opt(None, "push this already written folder")
    overwrite: bool = opt(False, "replace an output folder this script wrote")
    strict: bool = opt(False, "refuse models the competition's rules do not allow")
    allow_other_base: bool = opt(False, "merge although the adapter names another base path (a moved base)")
    force_push: bool = opt(False, "with --push_only: upload a folder quantize_push.py did not write")

    def check(self) -> None:
        if not self.logit_tolerance > 0:
            raise KitError(f"--logit_tolerance must be > 0 (got {self.logit_tolerance})")
        if self.push_only:
            if not (Path(self.push_only) / "config.json").exists():
                raise KitError(f"{self.push_only}: not a saved model folder (no config.json)")
            if not self.push_to:
                raise KitError("--push_only needs --push_to REPO")
        elif not self.model or not self.output:
            raise KitError("--model and --output are required (or --push_only DIR --push_to REPO)")
        elif self.no_quantize and not self.adapter:
            raise KitError("--no_quantize only makes sense with --adapter (merge mode)")
