r"""Requantize a base model to bitsandbytes 4-bit, or merge a trained LoRA and quantize the result;
verify the saved folder, write a model card, and push it to the Hub.

    python quantize_push.py --model google/gemma-2-27b --output models/gemma-2-27b-bnb-4bit \
        --push_to you/gemma-2-27b-bnb-4bit
    python quantize_push.py --model google/gemma-2-27b --adapter results/<run>/adapter \
        --output models/gemma-2-27b-<run>-bnb-4bit --push_to you/gemma-2-27b-<run>
    python quantize_push.py --push_only models/gemma-2-27b-<run>-bnb-4bit --push_to you/...

nf4 with double quantization and bf16 compute by default (every field a flag). In merge mode the
base is loaded in bf16, not 4-bit: merging into 4-bit weights shifts the logits badly. The token
comes from HF_TOKEN (or a cached `hf auth login`) and is never printed or written.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from kit.hub import hub_token, push_folder
from kit.io import KitError, check_output, hold, partial_path, run_main, write_json
from kit.models import check_adapter_path, check_model_path, peak_memory
from kit.runs import RunDir, read_json
from kit.settings import parse_settings
from kit.stage_settings import QuantizeSettings

REPORT = "quantize_report.json"  # marks a folder this script wrote: --overwrite replaces only those
ALLOWED_BASES = re.compile(r"^(google/gemma-2-(2b|9b|27b)|llm-jp/llm-jp-3-(1\.8b|3\.7b|13b))$")
PREQUANTIZED = re.compile(r"(^unsloth/)|bnb-4bit|-4bit$|gptq|awq", re.IGNORECASE)
LICENSES = {"google/gemma": ("gemma", "Gemma Terms of Use, https://ai.google.dev/gemma/terms"),
            "llm-jp/llm-jp-3": ("apache-2.0", "Apache-2.0")}
VERIFY_PROMPTS = ["### 質問:\n日本の首都はどこですか？\n\n### 回答:\n", "こんにちは。今日は",
                  "次の文章を要約してください。"]


def check_rules(model: str, strict: bool) -> None:
    problems = []
    if PREQUANTIZED.search(model):
        problems.append(f"{model} looks pre-quantized by another publisher; quantize the base "
                        "yourself so the submitted weights are exactly the allowed model's")
    elif not ALLOWED_BASES.match(model):
        problems.append(f"{model} is not one of the allowed base models (base gemma-2 2B/9B/27B, "
                        "base llm-jp-3 1.8B/3.7B/13B)")
    for problem in problems:
        if strict:
            raise KitError(problem + " (--strict)")
        print(f"warning: {problem}", file=sys.stderr)


def check_inputs(settings: QuantizeSettings) -> None:
    """Everything that can fail before a model is loaded (beyond QuantizeSettings.check)."""
    if not settings.push_only:
        check_model_path(settings.model)
        check_rules(settings.model, settings.strict)
        check_output(settings.output, {"--model": settings.model, "--adapter": settings.adapter}, folder=True)
        if Path(settings.output).exists():
            if not settings.overwrite:
                raise KitError(f"{settings.output} exists; pass --overwrite to replace it")
            if not (Path(settings.output) / REPORT).exists():
                raise KitError(f"{settings.output} was not written by quantize_push.py (no "
                               "quantize_report.json); --overwrite replaces only the kit's own output")
        if settings.adapter:
            base = check_adapter_path(settings.adapter).get("base_model_name_or_path")
            same = lambda a, b: os.path.normpath(a) == os.path.normpath(b) or (
                Path(a).expanduser().exists() and Path(a).expanduser().resolve() == Path(b).expanduser().resolve())
            if base and not same(base, settings.model) and not settings.allow_other_base:
                raise KitError(f"{settings.adapter} was trained on {base!r}, not on --model {settings.model!r} "
                               "(if the base has moved, pass --allow_other_base)")
    elif not (Path(settings.push_only) / REPORT).exists() and not settings.force_push:
        raise KitError(f"{settings.push_only} was not written and verified by quantize_push.py (no {REPORT}); "
                       "pass --force_push to upload it anyway")
    if settings.push_to and not hub_token():
        raise KitError("pushing needs HF_TOKEN in the environment (or `hf auth login`)")


def quantization_config(settings):
    from kit.models import bnb_config

    return bnb_config(settings.compute_dtype, settings.quant_type, settings.double_quant)


def next_token_logits(model, tokenizer, prompts):
    import torch

    with torch.no_grad():
        return torch.stack([model(**tokenizer(p, return_tensors="pt").to(model.device)).logits[0, -1]
                            .float().cpu() for p in prompts])


def build(settings: QuantizeSettings, staging: Path, merge_dir: Path):
    """(report, base+adapter next-token logits or None): writes the model into `staging`; a
    merge is saved in `merge_dir` first and quantized from there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models import ensure_chat_template, model_load_kwargs

    report, expected = {}, None
    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    report["chat_template_added"] = ensure_chat_template(tokenizer)
    load = model_load_kwargs(settings.model)
    source = settings.model
    if settings.adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(settings.model, dtype=getattr(torch, settings.merge_dtype), **load)
        tuned = PeftModel.from_pretrained(base, settings.adapter)
        expected = next_token_logits(tuned, tokenizer, VERIFY_PROMPTS)
        merged = tuned.merge_and_unload()
        difference = (next_token_logits(merged, tokenizer, VERIFY_PROMPTS) - expected).abs().max().item()
        report["merge_max_logit_difference"] = round(difference, 6)
        print(f"merge check: max next-token logit difference {difference:.2e} "
              f"(tolerance {settings.logit_tolerance})")
        if difference > settings.logit_tolerance:
            raise KitError(f"merged model's logits differ from base+adapter by {difference:.3g} "
                           f"(> {settings.logit_tolerance}); not saving")
        target = staging if settings.no_quantize else merge_dir
        merged.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        del merged, tuned, base
        source = str(target)
    if not settings.no_quantize:
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization_config(settings),
                                                     **load)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return report, expected


def verify(folder: Path, quantized: bool, expected_logits=None) -> dict:
    """Reload the folder through AutoModelForCausalLM, check 4-bit layers, generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, low_cpu_mem_usage=True)
    linear = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    four_bit = [m for m in linear if type(m).__name__ == "Linear4bit"]
    if quantized and (not linear or len(four_bit) != len(linear)):
        raise KitError(f"{folder}: {len(four_bit)} of {len(linear)} linear layers are 4-bit")
    encoded = tokenizer(VERIFY_PROMPTS[0], return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=8, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    sample = tokenizer.decode(output[0, encoded.input_ids.shape[1]:], skip_special_tokens=True)
    result = {"linear_layers": len(linear), "linear_4bit": len(four_bit), "sample": sample}
    if expected_logits is not None:  # how far 4-bit rounding moved the merged model
        quantized = next_token_logits(model, tokenizer, VERIFY_PROMPTS)
        result["quantized_vs_merged_max_logit_difference"] = round(
            (quantized - expected_logits).abs().max().item(), 4)
    print(f"verify: {len(four_bit)}/{len(linear)} linear layers 4-bit; greedy sample {sample!r}")
    return result


def epochs_line(settings, run_config: dict) -> str:
    """What ran, not what was asked: max_steps overrides num_train_epochs."""
    run = RunDir.of_adapter(settings.adapter)
    ran = run.read_metrics().get("epochs_run") if run else None
    asked = (f"num_train_epochs {run_config.get('num_train_epochs')}, "
             f"max steps {run_config.get('max_steps', -1)}")
    return f"{ran} epochs run ({asked})" if ran is not None else asked


def infer_command(settings) -> str:
    """The infer.py command the run was answered with (from its infer_metrics.json), pointed at
    this model; a template when the run has none."""
    import shlex

    run = RunDir.of_adapter(settings.adapter)
    argv = read_json(run.infer_metrics).get("argv") if run else None
    if not argv:
        return (f"python infer.py --model {settings.push_to or settings.output} --tasks elyza-tasks-100-TV_0.jsonl "
                "--reference <reference QA JSONL> --output output.jsonl")
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=")[0]
        if name in ("--model", "--adapter", "--judge", "--results_dir", "--run_name"):
            skip = "=" not in token
            continue
        kept.append(token)
    return shlex.join(["python", "infer.py", "--model", settings.push_to or settings.output, *kept])


def model_card(settings, report: dict) -> str:
    run = RunDir.of_adapter(settings.adapter)
    run_config = run.read_config() if run else {}
    license_id, license_ = next((v for k, v in LICENSES.items() if settings.model.startswith(k)),
                                ("other", "see the base model's card"))
    quant = "none (bf16 merge)" if settings.no_quantize else (
        f"bitsandbytes 4-bit {settings.quant_type}, double quant {settings.double_quant}, "
        f"compute dtype {settings.compute_dtype}")
    commands = []
    if run_config:
        commands.append(f"python train.py --config {run.config}")
    commands.append("python " + " ".join(["quantize_push.py", "--model", settings.model, "--output", settings.output]
                                         + (["--adapter", settings.adapter] if settings.adapter else [])
                                         + (["--no_quantize"] if settings.no_quantize else [])
                                         + (["--push_to", settings.push_to] if settings.push_to else [])))
    commands.append(infer_command(settings))
    lines = ["---", f"base_model: {settings.model}", f"license: {license_id}",
             "library_name: transformers", "tags: [llm2024, japanese, bitsandbytes, lora]", "---", "",
             f"# {Path(settings.output).name}", "",
             f"Base model: `{settings.model}` (licence: {license_}).", f"Quantization: {quant}.", ""]
    if run_config:
        lines += ["## Adapter run", "",
                  f"- LoRA r {run_config.get('lora_r')}, alpha {run_config.get('lora_alpha')}, "
                  f"dropout {run_config.get('lora_dropout')}, template `{run_config.get('template')}`",
                  f"- learning rate {run_config.get('learning_rate')}, {epochs_line(settings, run_config)}",
                  f"- data files: {', '.join(map(str, run_config.get('data_files', []))) or 'none'}",
                  f"- data licences: {'; '.join(run_config.get('data_licenses', [])) or 'not stated'}",
                  f"- merge check: max next-token logit difference "
                  f"{report.get('merge_max_logit_difference')}", ""]
    synthetic = run_config.get("synthetic_data_models") or []
    lines += ["## Synthetic data", "",
              f"Models that generated synthetic training data: {', '.join(synthetic) or 'none'}.", "",
              "## Reproduce", "", "```bash", *commands, "```", "",
              "## Intended use", "",
              "Answering the LLM2024 competition's elyza-tasks within its rules: one NVIDIA L4, "
              "no external services at inference time. Not evaluated for other uses.", ""]
    return "\n".join(lines)


def push(folder: str, repo: str, private: bool) -> None:
    push_folder(folder, repo, private, f"python quantize_push.py --push_only {folder} --push_to {repo}")


def build_verified(settings: QuantizeSettings, staging: Path) -> dict:
    """Build, verify and document the model in `staging` beside the output (and the bf16 merge in
    `<staging>-merge`, ~55 GB at 27B, on the output's disk); a failure removes both."""
    start = time.perf_counter()
    merge_dir = staging.with_name(staging.name + "-merge")
    for leftover in (staging, merge_dir):  # what a killed run left
        shutil.rmtree(leftover, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        report, expected_logits = build(settings, staging, merge_dir)
        shutil.rmtree(merge_dir, ignore_errors=True)
        report["verify"] = verify(staging, not settings.no_quantize, expected_logits)
        (staging / "README.md").write_text(model_card(settings, report), encoding="utf-8")
        report.update(peak_memory())
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_json(staging / REPORT, report)
    except BaseException:
        for leftover in (staging, merge_dir):
            shutil.rmtree(leftover, ignore_errors=True)
        raise
    return report


def main(argv=None) -> dict:
    settings, _ = parse_settings(QuantizeSettings, argv, prog="quantize_push.py", doc=__doc__)
    check_inputs(settings)
    if settings.push_only:
        push(settings.push_only, settings.push_to, settings.private)
        return {}
    with hold(Path(settings.output).parent / f"{Path(settings.output).name}.build", "quantize_push.py"):
        report = build_verified(settings, partial_path(settings.output))
        shutil.rmtree(settings.output, ignore_errors=True)
        os.replace(partial_path(settings.output), settings.output)
    peak = ", ".join(f"{k} {v}" for k, v in report.items() if k.startswith("peak_"))
    print(f"saved {settings.output} ({report['elapsed_s']} s, {peak}); model card: "
          f"{Path(settings.output) / 'README.md'}")
    if not settings.push_to:
        print(f"next: python quantize_push.py --push_only {settings.output} --push_to <you>/<name>   "
              f"(answer with it: python infer.py --model {settings.output} --tasks <tasks>)")
    if settings.push_to:
        push(settings.output, settings.push_to, settings.private)
    return report


if __name__ == "__main__":
    run_main(main)
