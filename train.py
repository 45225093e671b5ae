r"""LoRA SFT of a causal LM on instruction/response pairs: unsloth on a GPU, transformers + peft
(+ bitsandbytes for 4-bit) elsewhere, with the prompt template infer.py uses.

    python train.py --config configs/gemma2_27b_seed.yaml --data_files filtered.jsonl qa111.jsonl
    python train.py --config configs/tiny_cpu.yaml --model_name_or_path results/demo/models/tiny-gemma2 \
        --data_files results/demo/filtered.jsonl
    python train.py --config configs/tiny_cpu.yaml ... --sweep lora_r=8,16 lora_alpha=16,32
    python train.py --config ... --sweep lora_r=32,64 k=10,20 --score configs/score_dev.yaml  # judged
    accelerate launch train.py --config ... --backend hf         # several GPUs (DDP/FSDP/DeepSpeed)
    python train.py --config results/<run>/config.yaml --overwrite   # rerun a run exactly

Defaults < --config YAML < command-line flags; every SFTConfig field works (trl's TrlParser).
Each run writes results/<run>/: config.yaml, adapter/, metrics.json, loss.png; and the trial
tables results/trials.csv, results/TRIALS.md, results/trials.png are rebuilt after each run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from kit.io import KitError, atomic_open, read_pairs, run_main, write_json
from kit.runs import ResultsDir, RunDir
from kit.stage_settings import TrainSettings
from kit.trials import update_trials_table


def checkpoints_of(run: RunDir) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    step = lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1
    return sorted(run.checkpoints.glob("checkpoint-*"), key=step)


def check_run_state(settings: TrainSettings, resume, run: RunDir) -> None:
    """A finished run is refused (also with --resume_from_checkpoint); an unfinished one with
    checkpoints is refused with the flag that resumes it, so hours of training are never redone
    by accident; a checkpoint path that does not exist fails here, before the model loads."""
    checkpoints = checkpoints_of(run)
    for data_file in settings.data_files + ([settings.eval_file] if settings.eval_file else []):
        if run.path.resolve() in Path(data_file).resolve().parents:
            raise KitError(f"{data_file} lies inside the run folder {run.path}, which a rerun rewrites")
    if settings.overwrite:
        if resume:
            raise KitError("--overwrite starts the run again; --resume_from_checkpoint continues it: pick one")
        return
    if run.metrics.exists():
        raise KitError(f"{run.path} is a finished run; pass --overwrite to train it again"
                       + (" (there is nothing to resume)" if resume else ""))
    if resume is True and not checkpoints:
        raise KitError(f"{run.path} has no checkpoints to resume from")
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise KitError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    if resume is None and checkpoints:
        raise KitError(f"{run.path} holds an unfinished run ({checkpoints[-1].name}); continue it with "
                       "--resume_from_checkpoint true, or start again with --overwrite")


def resuming(sft):
    """What to hand trainer.train(resume_from_checkpoint=...): None, True (the latest) or a path."""
    value = sft.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false"):
        return None
    return True if str(value).lower() == "true" else value


def complete(checkpoint: Path) -> bool:
    """A checkpoint the trainer can resume from: its state and weights were written whole (a run
    killed while saving, or a full disk, leaves one that is not)."""
    import json

    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        from safetensors import safe_open

        weights = next(p for p in (checkpoint / "adapter_model.safetensors", checkpoint / "model.safetensors")
                       if p.is_file())
        with safe_open(str(weights), "pt") as handle:
            list(handle.keys())
    except (OSError, ValueError, StopIteration, Exception):
        return False
    return True


def resume_point(run: RunDir, resume):
    """The newest complete checkpoint for `--resume_from_checkpoint true`, saying which it skipped."""
    if resume is not True:
        return resume
    checkpoints = checkpoints_of(run)[::-1]  # newest first
    for checkpoint in checkpoints:
        if complete(checkpoint):
            return str(checkpoint)
        print(f"note: {checkpoint.name} is incomplete (killed while saving, or the disk was full); "
              "skipped", file=sys.stderr)
    raise KitError(f"{run.path}: no complete checkpoint to resume from ({len(checkpoints)} incomplete)")


def split_eval(settings: TrainSettings, rows: list[dict], seed: int) -> tuple[list, list]:
    """(train rows, eval rows): --eval_file, else --val_size held out at random, else none."""
    if settings.eval_file:
        return rows, read_pairs(settings.eval_file)
    if not settings.val_size:
        return rows, []
    import random

    n_eval = int(settings.val_size) if settings.val_size >= 1 else max(1, round(len(rows) * settings.val_size))
    if n_eval >= len(rows):
        raise KitError(f"--val_size {settings.val_size} leaves no training data ({len(rows)} rows)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def build_datasets(settings: TrainSettings, sft, tokenizer, counts: dict):
    """prompt/completion datasets rendered by prompts/, with over-long examples handled."""
    import datasets

    from prompts import load_template

    template = load_template(settings.template)
    empty_prompt = len(tokenizer(template.prompt("")).input_ids)
    if sft.max_length is not None and empty_prompt + 8 > sft.max_length:
        raise KitError(f"max_length {sft.max_length} is shorter than the {settings.template!r} prompt "
                       f"template itself ({empty_prompt} tokens)")

    def render(rows, split):
        examples = [{"prompt": template.prompt(r["instruction"], context=r["context"]),
                     "completion": template.completion(r["response"])} for r in rows]
        lengths = [len(tokenizer(e["prompt"] + e["completion"]).input_ids) + 1 for e in examples]
        long = {i for i, n in enumerate(lengths) if sft.max_length and n > sft.max_length}
        counts[f"{split}_overlong_{'dropped' if settings.overlong == 'drop' else 'truncated'}"] = len(long)
        if settings.overlong == "drop":
            examples = [e for i, e in enumerate(examples) if i not in long]
        if not examples:
            raise KitError(f"no {split} examples left (all longer than max_length {sft.max_length})")
        counts[f"{split}_examples"] = len(examples)
        return datasets.Dataset.from_list(examples)

    train_rows, eval_rows = split_eval(settings, [r for f in settings.data_files for r in read_pairs(f)], sft.seed)
    return render(train_rows, "train"), (render(eval_rows, "eval") if eval_rows else None)


def build_trainer(settings: TrainSettings, sft, explicit: set, backend: str):
    """Render the data, load the model, add LoRA: (trainer, run, counts). Under a distributed
    launch every rank builds its own; only the main one writes the run's files."""
    import yaml
    from transformers import AutoTokenizer, set_seed
    from trl import SFTTrainer

    from kit.models import add_lora, load_model
    from kit.tracking import wandb_reports
    from kit.training import progress_callback, resolved_config, run_name

    run = ResultsDir(settings.results_dir).run(run_name(settings, sft, explicit))
    check_run_state(settings, resuming(sft), run)
    if settings.overwrite and sft.process_index == 0:  # what the replaced run left: checkpoints, answers, scores
        import shutil

        for stale in (run.checkpoints, run.path / "infer"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in (run.score, run.scores, run.generations, run.infer_metrics, run.prompts, run.failed, run.metrics):
            stale.unlink(missing_ok=True)
    try:  # the tokenizer alone is cheap: every data error surfaces before the model loads
        tokenizer = AutoTokenizer.from_pretrained(settings.model_name_or_path)
    except OSError as err:
        raise KitError(f"{settings.model_name_or_path}: cannot load the tokenizer ({err})") from None
    counts = {}
    train_set, eval_set = build_datasets(settings, sft, tokenizer, counts)
    sft.run_name, sft.output_dir = run.name, str(run.checkpoints)
    sft.report_to = wandb_reports(sft.report_to, "report_to" in explicit, run)
    sft.completion_only_loss = settings.loss_on == "completion"
    sft.include_num_input_tokens_seen = "non_padding"
    if eval_set is None:
        sft.eval_strategy = "no"
    elif sft.eval_strategy == "no":
        sft.eval_strategy, sft.eval_steps = "steps", sft.eval_steps or sft.logging_steps
    run.path.mkdir(parents=True, exist_ok=True)
    if sft.process_index == 0:
        with atomic_open(run.config) as handle:
            yaml.safe_dump(resolved_config(settings, sft), handle, allow_unicode=True, sort_keys=False)
    model, tokenizer = load_model(settings.model_name_or_path, backend, settings.load_in_4bit, sft.max_length or 2048)
    set_seed(sft.seed)  # LoRA's A matrices are drawn here, before the trainer seeds anything
    model = add_lora(model, backend, settings.lora_r, settings.lora_alpha, settings.lora_dropout,
                     settings.lora_target_modules, sft.seed, sft.gradient_checkpointing, settings.load_in_4bit)
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    print(f"data: {counts['train_examples']} training examples"
          + (f", {counts['eval_examples']} for eval loss" if eval_set is not None else "") + "; tokenizing")
    disable_progress_bar()  # a few seconds of bars that a terminal leaves as blank lines
    try:
        trainer = SFTTrainer(model=model, args=sft, train_dataset=train_set, eval_dataset=eval_set,
                             processing_class=tokenizer)
    finally:
        enable_progress_bar()
    plain, one_line = progress_callback()
    if trainer.pop_callback(plain) is not None:
        trainer.add_callback(one_line)
    return trainer, run, counts


def train(settings: TrainSettings, sft, explicit: set, backend: str) -> dict:
    import torch

    from kit.hub import push_folder
    from kit.training import collect_metrics, plot_losses, session_counter

    trainer, run, counts = build_trainer(settings, sft, explicit, backend)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    session = session_counter()
    trainer.add_callback(session)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_point(run, resuming(sft)))
    runtime = time.perf_counter() - start
    trainer.save_model(str(run.adapter))  # the main process writes; every rank waits for it
    metrics = collect_metrics(trainer, result, runtime, session, backend, counts)  # tokens summed over ranks
    metrics.update(run=run.name, lora_r=settings.lora_r, lora_alpha=settings.lora_alpha,
                   learning_rate=sft.learning_rate, num_train_epochs=sft.num_train_epochs,
                   max_steps=sft.max_steps, template=settings.template, data_files=settings.data_files,
                   processes=sft.world_size)
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return metrics
    trainer.processing_class.save_pretrained(run.adapter)
    write_json(run.metrics, metrics)
    plot_losses(metrics, run.loss_plot)
    update_trials_table(settings.results_dir)
    if settings.push_adapter_to:
        push_folder(run.adapter, settings.push_adapter_to)
    show = lambda value: "not measured" if value is None else f"{value:.4g}"
    print(f"run {run.name}: final train loss {show(metrics['final_train_loss'])}, best eval loss "
          f"{show(metrics['best_eval_loss'])}, {metrics['train_tokens_per_s']:,.0f} tokens/s → {run.path}")
    print(f"next: python infer.py --model {settings.model_name_or_path} --adapter {run.adapter} "
          "--tasks <tasks> --reference <reference QA JSONL>")
    return metrics


def main(argv=None):
    from kit.training import parse_train, print_help_all, sft_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help_all" in argv:
        return print_help_all()
    settings, info = parse_train(argv, __doc__)
    if settings.sweep:
        from kit.sweep import run_sweep

        return run_sweep(argv, settings)
    quiet_other_ranks()
    from kit.models import resolve_backend

    backend = resolve_backend(settings.backend)  # first: unsloth must come before trl is imported
    sft, explicit = sft_config(info)
    from contextlib import nullcontext

    from kit.io import hold
    from kit.training import run_name

    run = ResultsDir(settings.results_dir).run(run_name(settings, sft, explicit))
    with hold(run.path, "train.py") if sft.process_index == 0 else nullcontext():
        return train(settings, sft, explicit, backend)


def quiet_other_ranks() -> None:
    """Under a distributed launch only the main process prints (errors still reach stderr)."""
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


if __name__ == "__main__":
    run_main(main, resume_note="to continue from the last saved checkpoint, rerun with "
                               "--resume_from_checkpoint true")
