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

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from kit.io import KitError, check_output, load_yaml, partial_path, run_main, write_json
from kit.models import check_model_path, hub_token, peak_memory, push_folder

ALLOWED_BASES = re.compile(r"^(google/gemma-2-(2b|9b|27b)|llm-jp/llm-jp-3-(1\.8b|3\.7b|13b))$")
PREQUANTIZED = re.compile(r"(^unsloth/)|bnb-4bit|-4bit$|gptq|awq", re.IGNORECASE)
LICENSES = {"google/gemma": ("gemma", "Gemma Terms of Use, https://ai.google.dev/gemma/terms"),
            "llm-jp/llm-jp-3": ("apache-2.0", "Apache-2.0")}
VERIFY_PROMPTS = ["### 質問:\n日本の首都はどこですか？\n\n### 回答:\n", "こんにちは。今日は",
                  "次の文章を要約してください。"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="base model: hub name or folder")
    p.add_argument("--output", help="folder to write")
    p.add_argument("--adapter", help="merge this LoRA adapter (results/<run>/adapter) first")
    p.add_argument("--no_quantize", action="store_true", help="merge mode: save the bf16 merge")
    p.add_argument("--quant_type", default="nf4", choices=("nf4", "fp4"))
    p.add_argument("--double_quant", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compute_dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--merge_dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--logit_tolerance", type=float, default=0.5,
                   help="max |merged - base+adapter| next-token logit difference (bf16 rounding of "
                        "softcapped gemma-2 logits is ~0.1; merging into 4-bit weights shifts units)")
    p.add_argument("--push_to", help="hub repo id to create/upload to")
    p.add_argument("--private", action="store_true")
    p.add_argument("--push_only", metavar="DIR", help="push an already written folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--strict", action="store_true", help="refuse models the rules do not allow")
    return p.parse_args(argv)


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


def check_inputs(args) -> None:
    """Everything that can fail before a model is loaded."""
    if args.push_only:
        if not (Path(args.push_only) / "config.json").exists():
            raise KitError(f"{args.push_only}: not a saved model folder (no config.json)")
        if not args.push_to:
            raise KitError("--push_only needs --push_to REPO")
    else:
        if not args.model or not args.output:
            raise KitError("--model and --output are required (or --push_only DIR --push_to REPO)")
        check_model_path(args.model)
        check_rules(args.model, args.strict)
        check_output(args.output, {"--model": args.model, "--adapter": args.adapter}, folder=True)
        if Path(args.output).exists():
            if not args.overwrite:
                raise KitError(f"{args.output} exists; pass --overwrite to replace it")
            if not (Path(args.output) / "quantize_report.json").exists():
                raise KitError(f"{args.output} was not written by quantize_push.py (no "
                               "quantize_report.json); --overwrite replaces only the kit's own output")
        if args.adapter:
            config = Path(args.adapter) / "adapter_config.json"
            if not config.exists():
                raise KitError(f"{args.adapter}: no adapter_config.json (not a LoRA adapter folder)")
            base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
            if base and os.path.normpath(base) != os.path.normpath(args.model):
                raise KitError(f"{args.adapter} was trained on {base!r}, not on --model {args.model!r}")
        elif args.no_quantize:
            raise KitError("--no_quantize only makes sense with --adapter (merge mode)")
    if args.push_to and not hub_token():
        raise KitError("pushing needs HF_TOKEN in the environment (or `hf auth login`)")


def quantization_config(args):
    from kit.models import bnb_config

    return bnb_config(args.compute_dtype, args.quant_type, args.double_quant)


def next_token_logits(model, tokenizer, prompts):
    import torch

    with torch.no_grad():
        return torch.stack([model(**tokenizer(p, return_tensors="pt").to(model.device)).logits[0, -1]
                            .float().cpu() for p in prompts])


def build(args, tmp: Path):
    """(report, base+adapter next-token logits or None): writes the model into args.output."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models import ensure_chat_template, model_load_kwargs

    report, expected = {}, None
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    report["chat_template_added"] = ensure_chat_template(tokenizer)
    load = model_load_kwargs(args.model)
    source = args.model
    if args.adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.merge_dtype), **load)
        tuned = PeftModel.from_pretrained(base, args.adapter)
        expected = next_token_logits(tuned, tokenizer, VERIFY_PROMPTS)
        merged = tuned.merge_and_unload()
        difference = (next_token_logits(merged, tokenizer, VERIFY_PROMPTS) - expected).abs().max().item()
        report["merge_max_logit_difference"] = round(difference, 6)
        print(f"merge check: max next-token logit difference {difference:.2e} "
              f"(tolerance {args.logit_tolerance})")
        if difference > args.logit_tolerance:
            raise KitError(f"merged model's logits differ from base+adapter by {difference:.3g} "
                           f"(> {args.logit_tolerance}); not saving")
        target = Path(args.output) if args.no_quantize else tmp
        merged.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        del merged, tuned, base
        source = str(target)
    if not args.no_quantize:
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization_config(args),
                                                     **load)
        model.save_pretrained(args.output, safe_serialization=True)
        tokenizer.save_pretrained(args.output)
    return report, expected


def verify(args, expected_logits=None) -> dict:
    """Reload the folder through AutoModelForCausalLM, check 4-bit layers, generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.output, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.output, low_cpu_mem_usage=True)
    linear = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    four_bit = [m for m in linear if type(m).__name__ == "Linear4bit"]
    if not args.no_quantize and (not linear or len(four_bit) != len(linear)):
        raise KitError(f"{args.output}: {len(four_bit)} of {len(linear)} linear layers are 4-bit")
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


def run_file(args, name: str) -> dict:
    """A JSON file of the adapter's run (results/<run>/NAME), or {}."""
    path = Path(args.adapter).parent / name if args.adapter else None
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path and path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def epochs_line(args, run_config: dict) -> str:
    """What ran, not what was asked: max_steps overrides num_train_epochs."""
    ran = run_file(args, "metrics.json").get("epochs_run")
    asked = (f"num_train_epochs {run_config.get('num_train_epochs')}, "
             f"max steps {run_config.get('max_steps', -1)}")
    return f"{ran} epochs run ({asked})" if ran is not None else asked


def infer_command(args) -> str:
    """The infer.py command the run was answered with (from its infer_metrics.json), pointed at
    this model; a template when the run has none."""
    import shlex

    argv = run_file(args, "infer_metrics.json").get("argv")
    if not argv:
        return (f"python infer.py --model {args.push_to or args.output} --tasks elyza-tasks-100-TV_0.jsonl "
                "--reference <reference QA JSONL> --output output.jsonl")
    kept, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        name = token.split("=")[0]
        if name in ("--model", "--adapter", "--judge", "--results_dir", "--run_name"):
            skip = "=" not in token
            continue
        kept.append(token)
    return shlex.join(["python", "infer.py", "--model", args.push_to or args.output, *kept])


def model_card(args, report: dict) -> str:
    run_config = {}
    if args.adapter and (Path(args.adapter).parent / "config.yaml").exists():
        run_config = load_yaml(Path(args.adapter).parent / "config.yaml")
    license_id, license_ = next((v for k, v in LICENSES.items() if args.model.startswith(k)),
                                ("other", "see the base model's card"))
    quant = "none (bf16 merge)" if args.no_quantize else (
        f"bitsandbytes 4-bit {args.quant_type}, double quant {args.double_quant}, "
        f"compute dtype {args.compute_dtype}")
    commands = []
    if run_config:
        commands.append(f"python train.py --config {Path(args.adapter).parent / 'config.yaml'}")
    commands.append("python " + " ".join(["quantize_push.py", "--model", args.model, "--output", args.output]
                                         + (["--adapter", args.adapter] if args.adapter else [])
                                         + (["--no_quantize"] if args.no_quantize else [])
                                         + (["--push_to", args.push_to] if args.push_to else [])))
    commands.append(infer_command(args))
    lines = ["---", f"base_model: {args.model}", f"license: {license_id}",
             "library_name: transformers", "tags: [llm2024, japanese, bitsandbytes, lora]", "---", "",
             f"# {Path(args.output).name}", "",
             f"Base model: `{args.model}` (licence: {license_}).", f"Quantization: {quant}.", ""]
    if run_config:
        lines += ["## Adapter run", "",
                  f"- LoRA r {run_config.get('lora_r')}, alpha {run_config.get('lora_alpha')}, "
                  f"dropout {run_config.get('lora_dropout')}, template `{run_config.get('template')}`",
                  f"- learning rate {run_config.get('learning_rate')}, {epochs_line(args, run_config)}",
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


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_inputs(args)
    if args.push_only:
        push(args.push_only, args.push_to, args.private)
        return {}
    start = time.perf_counter()
    # Work happens in <output>.partial (the model) and <output>.partial-merge (the bf16 merge, ~55 GB
    # at 27B) beside the output, on its disk; a killed run leaves them and the next run clears them.
    staging = partial_path(args.output)
    merge_dir = staging.with_name(staging.name + "-merge")
    final_output, args.output = args.output, str(staging)  # build beside, rename when verified
    for leftover in (staging, merge_dir):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        report, expected_logits = build(args, merge_dir)
        shutil.rmtree(merge_dir, ignore_errors=True)
        report["verify"] = verify(args, expected_logits)
        args.output = final_output
        (staging / "README.md").write_text(model_card(args, report), encoding="utf-8")
        report.update(peak_memory())
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_json(staging / "quantize_report.json", report)
    except BaseException:
        for leftover in (staging, merge_dir):
            shutil.rmtree(leftover, ignore_errors=True)
        raise
    shutil.rmtree(final_output, ignore_errors=True)
    os.replace(staging, final_output)
    peak = ", ".join(f"{k} {v}" for k, v in report.items() if k.startswith("peak_"))
    print(f"saved {final_output} ({report['elapsed_s']} s, {peak})")
    if args.push_to:
        push(final_output, args.push_to, args.private)
    return report


if __name__ == "__main__":
    run_main(main)
