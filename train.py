r"""LoRA SFT of a causal LM on instruction/response pairs: unsloth on a GPU, transformers + peft
(+ bitsandbytes for 4-bit) elsewhere, with the prompt template infer.py uses.

    python train.py --config configs/gemma2_27b_seed.yaml --data_files filtered.jsonl qa111.jsonl
    python train.py --config configs/tiny_cpu.yaml --model_name_or_path results/demo/models/tiny-gemma2 \
        --data_files results/demo/filtered.jsonl
    python train.py --config configs/tiny_cpu.yaml ... --sweep lora_r=8,16 lora_alpha=16,32
    python train.py --config ... --sweep lora_r=32,64 k=10,20 --score score.yaml  # judged trials
    accelerate launch train.py --config ... --backend hf         # several GPUs (DDP/FSDP/DeepSpeed)
    python train.py --config results/<run>/config.yaml --overwrite   # rerun a run exactly

Defaults < --config YAML < command-line flags (trl's TrlParser); every SFTConfig field works.
Each run writes results/<run>/: config.yaml, adapter/, metrics.json, loss.png; and the trial
tables results/trials.csv, results/TRIALS.md, results/trials.png are rebuilt after each run.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from kit.io import KitError, atomic_open, did_you_mean, load_yaml, read_pairs, run_main, write_json
from kit.models import hub_token
from kit.trials import update_trials_table

# Fields of SFTConfig that are derived per run, not part of the recipe.
DERIVED = {"output_dir", "logging_dir", "hub_token", "push_to_hub_token", "run_name",
           "include_num_input_tokens_seen", "completion_only_loss"}


@dataclass
class KitArguments:
    model_name_or_path: str = field(default="google/gemma-2-27b", metadata={"help": "base model"})
    data_files: list[str] = field(default_factory=list, metadata={"help": "instruction/response JSONL"})
    eval_file: str | None = field(default=None, metadata={"help": "held-out JSONL for eval loss"})
    val_size: float = field(default=0.0, metadata={"help": "split this fraction (<1) or count off"})
    template: str = field(default="alpaca_ja", metadata={"help": "prompt template in prompts/"})
    loss_on: str = field(default="completion", metadata={"help": "completion | full (seed)"})
    overlong: str = field(default="truncate", metadata={"help": "truncate | drop examples > max_length"})
    backend: str = field(default="auto", metadata={"help": "auto | hf | unsloth"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: nf4 + double quant"})
    lora_r: int = 64
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "default: all projections"})
    results_dir: str = "results"
    data_licenses: list[str] = field(default_factory=list, metadata={"help": "for the model card"})
    synthetic_data_models: list[str] = field(default_factory=list,
                                             metadata={"help": "models that generated the data"})
    overwrite: bool = field(default=False, metadata={"help": "rerun a finished run"})
    sweep: list[str] = field(default_factory=list, metadata={"help": "key=v1,v2 ... (grid)"})
    push_adapter_to: str | None = field(default=None, metadata={"help": "hub repo; token from HF_TOKEN"})


def join_negative_numbers(argv) -> list[str]:
    """`--learning_rate -1e-4` reaches the range check instead of argparse's "expected one
    argument" (argparse reads -1e-4 as an option)."""
    import re

    out = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-[\d.][\d.eE+-]*", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def parse(argv):
    """(kit_args, sft_config, names set explicitly) with defaults < --config < flags."""
    from trl import SFTConfig, TrlParser

    argv = join_negative_numbers(argv)
    if "--push_to_hub" in argv:  # `--push_to_hub REPO` as entrants know it → our own adapter push
        i = argv.index("--push_to_hub")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--") and argv[i + 1].lower() not in (
                "true", "false"):
            argv[i:i + 2] = ["--push_adapter_to", argv[i + 1]]
    valid = training_option_names()
    raw = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise KitError("--config takes a YAML file (e.g. configs/tiny_cpu.yaml)")
        raw = load_yaml(argv[i + 1])
        unknown = sorted(set(raw) - valid)
        if unknown:
            raise KitError(f"{argv[i + 1]}: unknown key(s): {did_you_mean(unknown, valid)}")
    flags = {a[2:].split("=")[0] for a in argv if a.startswith("--")} - {"config"}
    unknown = sorted(flags - valid)
    if unknown:  # exact names only: `--learning_rat` is not read as --learning_rate
        raise KitError(f"unknown option(s): {did_you_mean(['--' + u for u in unknown], {'--' + v for v in valid})}")
    parser = TrlParser((KitArguments, SFTConfig))
    parser.allow_abbrev = False
    if "output_dir" not in raw and "--output_dir" not in argv:
        argv += ["--output_dir", "unset"]  # derived from results_dir/run_name below
    try:
        kit, sft = parser.parse_args_and_config(argv)
    except ValueError as err:
        hint = (" (no GPU here: SFTConfig defaults to bf16 on a GPU; pass --bf16 false --use_cpu true, "
                "or a CPU recipe such as --config configs/tiny_cpu.yaml)" if "bf16" in str(err) else "")
        raise KitError(f"bad training arguments: {err}{hint}") from None
    explicit = set(raw) | flags
    return kit, sft, explicit


COMMON_SFT_OPTIONS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                      "gradient_accumulation_steps", "max_length", "warmup_steps", "lr_scheduler_type",
                      "optim", "weight_decay", "neftune_noise_alpha", "bf16", "gradient_checkpointing",
                      "logging_steps", "eval_steps", "save_steps", "seed", "report_to", "run_name",
                      "resume_from_checkpoint")


def print_help() -> None:
    """The kit's options first, without importing trl (which takes seconds)."""
    print(__doc__)
    print("kit options (defaults < --config YAML < flags):")
    for f in fields(KitArguments):
        default = f.default if f.default is not MISSING else f.default_factory()
        note = f.metadata.get("help", "")
        print(f"  --{f.name:<24} {note + '; ' if note else ''}default: {default}")
    print("\nevery SFTConfig field works too; the usual ones:\n  "
          + " ".join(f"--{name}" for name in COMMON_SFT_OPTIONS))
    print("\n--sweep key=v1,v2 ... [--score CONFIG]: a grid of trials; python train.py --help_all "
          "lists every option")


def run_name_for(kit, sft, explicit) -> str:
    if sft.run_name and "run_name" in explicit:
        return sft.run_name
    length = f"s{sft.max_steps}" if sft.max_steps > 0 else f"e{sft.num_train_epochs:g}"
    name = f"r{kit.lora_r}-a{kit.lora_alpha}-lr{sft.learning_rate:g}-{length}-{kit.template}"
    if kit.loss_on != "completion":
        name += f"-loss{kit.loss_on}"
    return name


def load_pairs(files: list[str]) -> list[dict]:
    if not files:
        raise KitError("no training data: pass --data_files FILE [FILE ...]")
    return [row for name in files for row in read_pairs(name)]


def validate(kit, sft) -> None:
    """Everything that can be checked before a model is loaded."""
    from prompts import TemplateError, load_template

    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (kit.lora_r, kit.lora_alpha)) \
            or kit.lora_r <= 0 or kit.lora_alpha <= 0:
        raise KitError(f"lora_r and lora_alpha must be positive integers (got {kit.lora_r}, {kit.lora_alpha})")
    problems = []
    if not sft.learning_rate > 0:
        problems.append(f"learning_rate must be > 0 (got {sft.learning_rate})")
    if not kit.val_size >= 0:
        problems.append(f"val_size must be 0 or more (got {kit.val_size})")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(sft, name) < 1:
            problems.append(f"{name} must be at least 1 (got {getattr(sft, name)})")
    if sft.max_length is not None and sft.max_length < 1:
        problems.append(f"max_length must be at least 1 (got {sft.max_length})")
    if problems:
        raise KitError("; ".join(problems))
    if kit.loss_on not in ("completion", "full") or kit.overlong not in ("truncate", "drop"):
        raise KitError("--loss_on is completion|full and --overlong is truncate|drop")
    try:
        load_template(kit.template)
    except TemplateError as err:
        raise KitError(str(err)) from None
    if kit.push_adapter_to and not hub_token():
        raise KitError("--push_to_hub needs HF_TOKEN in the environment (or `hf auth login`)")


def build_datasets(kit, sft, tokenizer, counts: dict):
    """prompt/completion datasets rendered by prompts/, with over-long examples handled."""
    import datasets
    from prompts import load_template

    template = load_template(kit.template)
    empty_prompt = len(tokenizer(template.prompt("")).input_ids)
    if sft.max_length is not None and empty_prompt + 8 > sft.max_length:
        raise KitError(f"max_length {sft.max_length} is shorter than the {kit.template!r} prompt "
                       f"template itself ({empty_prompt} tokens)")

    def render(rows, split):
        examples = [{"prompt": template.prompt(r["instruction"], context=r["context"]),
                     "completion": template.completion(r["response"])} for r in rows]
        lengths = [len(tokenizer(e["prompt"] + e["completion"]).input_ids) + 1 for e in examples]
        long = {i for i, n in enumerate(lengths) if sft.max_length and n > sft.max_length}
        counts[f"{split}_overlong_{'dropped' if kit.overlong == 'drop' else 'truncated'}"] = len(long)
        if kit.overlong == "drop":
            examples = [e for i, e in enumerate(examples) if i not in long]
        if not examples:
            raise KitError(f"no {split} examples left (all longer than max_length {sft.max_length})")
        counts[f"{split}_examples"] = len(examples)
        return datasets.Dataset.from_list(examples)

    train_rows = load_pairs(kit.data_files)
    eval_rows = load_pairs([kit.eval_file]) if kit.eval_file else []
    if kit.val_size and not eval_rows:
        import random

        n_eval = int(kit.val_size) if kit.val_size >= 1 else max(1, round(len(train_rows) * kit.val_size))
        if n_eval >= len(train_rows):
            raise KitError(f"--val_size {kit.val_size} leaves no training data ({len(train_rows)} rows)")
        order = list(range(len(train_rows)))
        random.Random(sft.seed).shuffle(order)
        held = set(order[:n_eval])
        eval_rows = [r for i, r in enumerate(train_rows) if i in held]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held]
    return render(train_rows, "train"), (render(eval_rows, "eval") if eval_rows else None)


def configure_tracking(sft, explicit, run_dir: Path) -> None:
    """wandb when asked or keyed; otherwise offline wandb (never a login prompt, never a hang)."""
    if "report_to" not in explicit:
        sft.report_to = ["wandb"]
    if "wandb" in sft.report_to:
        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_PROJECT", "llm2024-kit")
        os.environ["WANDB_DIR"] = str(run_dir)  # the run's wandb files sit beside its metrics
        if os.environ.get("WANDB_MODE") == "disabled":
            sft.report_to = [r for r in sft.report_to if r != "wandb"]


def resolved_config(kit, sft) -> dict:
    from trl import SFTConfig

    config = {f.name: getattr(kit, f.name) for f in fields(KitArguments) if f.name not in ("sweep", "overwrite")}
    defaults = SFTConfig(output_dir="unset", bf16=False).to_dict()
    for key, value in sft.to_dict().items():
        if key not in DERIVED and (value != defaults.get(key) or key in (
                "bf16", "learning_rate", "gradient_checkpointing", "report_to")):
            config[key] = value
    return config


def build_trainer(kit, sft, explicit):
    """Validate, render the data, load the model, add LoRA: (trainer, run_dir, backend, counts)."""
    import yaml
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from kit.models import add_lora, check_model_path, load_model, resolve_backend

    validate(kit, sft)
    run_name = run_name_for(kit, sft, explicit)
    run_dir = Path(kit.results_dir) / run_name
    check_run_state(kit, sft, run_dir)
    if kit.overwrite:  # the kit's own checkpoints of the run being replaced
        import shutil

        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    check_model_path(kit.model_name_or_path)
    try:  # the tokenizer alone is cheap: every data error surfaces before the model loads
        tokenizer = AutoTokenizer.from_pretrained(kit.model_name_or_path)
    except OSError as err:
        raise KitError(f"{kit.model_name_or_path}: cannot load the tokenizer ({err})") from None
    counts = {}
    train_set, eval_set = build_datasets(kit, sft, tokenizer, counts)
    backend = resolve_backend(kit.backend)
    sft.run_name, sft.output_dir = run_name, str(run_dir / "checkpoints")
    configure_tracking(sft, explicit, run_dir)
    sft.completion_only_loss = kit.loss_on == "completion"
    sft.include_num_input_tokens_seen = "non_padding"
    if eval_set is None:
        sft.eval_strategy = "no"
    elif sft.eval_strategy == "no":
        sft.eval_strategy, sft.eval_steps = "steps", sft.eval_steps or sft.logging_steps
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(run_dir / "config.yaml") as handle:
        yaml.safe_dump(resolved_config(kit, sft), handle, allow_unicode=True, sort_keys=False)
    model, tokenizer = load_model(kit.model_name_or_path, backend, kit.load_in_4bit, sft.max_length or 2048)
    from transformers import set_seed

    set_seed(sft.seed)  # LoRA's A matrices are drawn here, before the trainer seeds anything
    model = add_lora(model, backend, kit.lora_r, kit.lora_alpha, kit.lora_dropout,
                     kit.lora_target_modules, sft.seed, sft.gradient_checkpointing, kit.load_in_4bit)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer)
    quiet_progress(trainer)
    return trainer, run_dir, backend, counts


def check_run_state(kit, sft, run_dir: Path) -> None:
    """A finished run is refused (also with --resume_from_checkpoint); an unfinished one with
    checkpoints is refused with the flag that resumes it, so hours of training are never redone
    by accident; a checkpoint path that does not exist fails here, before the model loads."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"),
                         key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    resume = resuming(sft)
    for data_file in kit.data_files + ([kit.eval_file] if kit.eval_file else []):
        path = Path(data_file).resolve()
        if run_dir.resolve() in path.parents:
            raise KitError(f"{data_file} lies inside the run folder {run_dir}, which a rerun rewrites")
    if kit.overwrite:
        if resume:
            raise KitError("--overwrite starts the run again; --resume_from_checkpoint continues it: pick one")
        return
    if (run_dir / "metrics.json").exists():
        raise KitError(f"{run_dir} is a finished run; pass --overwrite to train it again"
                       + (" (there is nothing to resume)" if resume else ""))
    if resume is True and not checkpoints:
        raise KitError(f"{run_dir} has no checkpoints to resume from")
    if isinstance(resume, str) and not Path(resume).is_dir():
        raise KitError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    if resume is None and checkpoints:
        raise KitError(f"{run_dir} holds an unfinished run ({checkpoints[-1].name}); continue it with "
                       "--resume_from_checkpoint true, or start again with --overwrite")


def quiet_progress(trainer) -> None:
    """The progress bar stays; the raw dict the trainer prints at every log step becomes one line."""
    from transformers.trainer_callback import ProgressCallback

    class KitProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or self.training_bar is None or not logs:
                return
            parts = [f"{name} {logs[key]:.4g}" for key, name in (
                ("loss", "loss"), ("eval_loss", "eval loss"), ("grad_norm", "grad norm"),
                ("learning_rate", "lr")) if isinstance(logs.get(key), (int, float))]
            if parts:
                self.training_bar.write(f"step {state.global_step}/{state.max_steps}: " + ", ".join(parts))

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(KitProgress)


def resuming(sft):
    """What to hand trainer.train(resume_from_checkpoint=...): None, True (the latest) or a path."""
    value = sft.resume_from_checkpoint
    if value is None or str(value).lower() in ("", "false"):
        return None
    return True if str(value).lower() == "true" else value


def train(kit, sft, explicit) -> dict:
    import torch

    from kit.models import package_versions, push_folder

    trainer, run_dir, backend, counts = build_trainer(kit, sft, explicit)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    session = session_counter()
    trainer.add_callback(session)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resuming(sft))
    runtime = time.perf_counter() - start
    trainer.save_model(str(run_dir / "adapter"))
    trainer.processing_class.save_pretrained(run_dir / "adapter")
    metrics = collect_metrics(trainer, result, runtime, session, backend, counts, package_versions())
    metrics.update(run=run_dir.name, lora_r=kit.lora_r, lora_alpha=kit.lora_alpha,
                   learning_rate=sft.learning_rate, num_train_epochs=sft.num_train_epochs,
                   max_steps=sft.max_steps, template=kit.template, data_files=kit.data_files)
    write_json(run_dir / "metrics.json", metrics)
    plot_losses(metrics, run_dir / "loss.png")
    update_trials_table(kit.results_dir)
    if kit.push_adapter_to:
        push_folder(run_dir / "adapter", kit.push_adapter_to)
    print(f"run {run_dir.name}: final train loss {metrics['final_train_loss']}, best eval loss "
          f"{metrics['best_eval_loss']}, {metrics['train_tokens_per_s']} tokens/s → {run_dir}")
    return metrics


def session_counter():
    """A callback noting where a (possibly resumed) run stood when this process started training,
    so throughput counts only this session's tokens; on_train_begin runs after a checkpoint's
    state is loaded."""
    from transformers import TrainerCallback

    class SessionCounter(TrainerCallback):
        tokens_at_start = step_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.tokens_at_start, self.step_at_start = state.num_input_tokens_seen, state.global_step

    return SessionCounter()


def collect_metrics(trainer, result, runtime, session, backend, counts, versions) -> dict:
    from kit.models import peak_memory

    history = trainer.state.log_history
    train_loss = [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h]
    eval_loss = [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h]
    tokens = trainer.state.num_input_tokens_seen
    session_tokens = tokens - session.tokens_at_start
    return {"backend": backend, "train_loss": train_loss, "eval_loss": eval_loss,
            "final_train_loss": train_loss[-1]["loss"] if train_loss else None,
            "mean_train_loss": round(result.training_loss, 6),
            "best_eval_loss": min((e["loss"] for e in eval_loss), default=None),
            "last_eval_loss": eval_loss[-1]["loss"] if eval_loss else None,
            "global_step": trainer.state.global_step, "epochs_run": round(trainer.state.epoch or 0, 2),
            "resumed_from_step": session.step_at_start or None, "runtime_s": round(runtime, 2),
            "train_tokens": int(tokens), "session_tokens": int(session_tokens),
            "train_tokens_per_s": round(session_tokens / runtime, 1),
            **peak_memory(), **counts, "versions": versions}


def plot_losses(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        points = metrics[key]
        if points:
            axis.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".", label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(metrics["run"])
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def sweep(argv: list[str]) -> list[dict]:
    """One subprocess per trial of the grid; finished trials are skipped, failures recorded and
    the sweep goes on (exit status 1 at the end). With --score CONFIG each trained adapter is
    answered on CONFIG's dev tasks by infer.py and scored by the judge, once per inference
    setting in the grid (grid keys that are not training options, e.g. k=0,10,20)."""
    argv = list(argv)
    score_config = None
    if "--score" in argv:
        i = argv.index("--score")
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise KitError("--score takes a judge/infer config file (YAML)")
        score_config = argv[i + 1]
        del argv[i:i + 2]
    start = argv.index("--sweep")
    end = next((i for i in range(start + 1, len(argv)) if argv[i].startswith("--")), len(argv))
    specs, base = argv[start + 1:end], argv[:start] + argv[end:]
    training_keys = training_option_names()
    train_axes, infer_axes = [], []
    for spec in specs:
        key, _, values = spec.partition("=")
        if not values or not all(values.split(",")):
            raise KitError(f"--sweep takes key=v1,v2 (got {spec!r})")
        axis = [(key, v) for v in values.split(",")]
        (train_axes if key in training_keys else infer_axes).append(axis)
    if infer_axes and not score_config:
        unknown = ", ".join(axis[0][0] for axis in infer_axes)
        raise KitError(f"--sweep: {unknown} is not a training option (inference keys need --score CONFIG)")
    infer_flags = score_flags(score_config) if score_config else []
    trials = []
    for combo in itertools.product(*train_axes):
        trial_argv = base + [x for key, value in combo for x in (f"--{key}", value)]
        kit, sft, explicit = parse(trial_argv)
        name = run_name_for(kit, sft, explicit)
        extra = [f"{k}{v}" for k, v in combo if k not in ("lora_r", "lora_alpha", "learning_rate",
                                                          "num_train_epochs", "max_steps", "template")]
        if extra:
            name = "-".join([name, *extra])
            trial_argv += ["--run_name", name]
        trials.append((name, trial_argv, kit))
    variants = [list(combo) for combo in itertools.product(*infer_axes)]
    outcomes, overwrite = [], "--overwrite" in base
    for index, (name, trial_argv, kit) in enumerate(trials, 1):
        results_dir = Path(kit.results_dir)
        run_dir = results_dir / name
        label = f"[{index}/{len(trials)}] {name}"
        if (run_dir / "metrics.json").exists() and not overwrite:
            print(f"{label}: already trained, skipped")
            status = "skipped"
        else:
            print(label)
            status = run_logged([sys.executable, str(Path(__file__).resolve()), *trial_argv],
                                run_dir, "train.log", label)
        outcomes.append({"run": name, "status": status})
        if score_config and status != "failed":
            for variant in variants:
                setting = "-".join(f"{k}{v}" for k, v in variant)
                out_dir = run_dir / "infer" / setting if setting else run_dir
                if (out_dir / "score.json").exists() and not overwrite:
                    print(f"{label} {setting or 'default inference'}: already scored, skipped")
                    continue
                command = [sys.executable, str(Path(__file__).with_name("infer.py")),
                           "--model", kit.model_name_or_path, "--adapter", str(run_dir / "adapter"),
                           "--results_dir", str(results_dir),
                           "--run_name", str(out_dir.relative_to(results_dir)),
                           "--output", str(out_dir / "output.jsonl"), "--judge", score_config,
                           *infer_flags, *[f"--{k}={v}" for k, v in variant]]
                result = run_logged(command, out_dir, "infer.log", f"{label} {setting or 'infer'}",
                                    inference=setting)
                outcomes.append({"run": name, "inference": setting, "status": result})
    table = update_trials_table(Path(trials[0][2].results_dir) if trials else Path("results"))
    print(table)
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        raise KitError(f"{len(failed)} of {len(outcomes)} sweep step(s) failed: "
                       f"{', '.join(o['run'] + ('/' + o['inference'] if o.get('inference') else '') for o in failed)}"
                       " (see failed.json and the .log files)")
    return outcomes


def training_option_names() -> set:
    from trl import SFTConfig

    return {f.name for f in fields(KitArguments)} | {f.name for f in fields(SFTConfig)}


def score_flags(config_path: str) -> list[str]:
    """infer.py flags from a --score config's infer keys (judge keys are read by infer.py itself)."""
    from kit.judging import JudgeSettings

    config = load_yaml(config_path)
    judge_keys = {f.name for f in fields(JudgeSettings)}
    flags = []
    for key, value in config.items():
        if key in judge_keys:
            continue
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                flags.append(f"--{key}")
            elif item not in (False, None):
                flags.append(f"--{key}={item}")  # `=`: a value like "---" is not read as a flag
    if "tasks" not in config:
        raise KitError(f"{config_path}: a --score config needs `tasks` (dev tasks with reference outputs)")
    return flags


def run_logged(command: list[str], log_dir: Path, log_name: str, label: str, inference: str = "") -> str:
    """Run a child, streaming its output here and into log_dir/log_name; "ok" or "failed" (with
    failed.json holding its last line)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    last = ""
    with open(log_dir / log_name, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            if line.strip() and "%|" not in line:  # progress bars are not the message
                last = line.strip()
        process.wait()
    failed_file = log_dir / "failed.json"
    if process.returncode != 0:
        write_json(failed_file, {"returncode": process.returncode, "error": last or "(no message)",
                                 "inference": inference, "argv": command[2:]})
        print(f"{label}: FAILED ({last}); continuing", file=sys.stderr)
        return "failed"
    failed_file.unlink(missing_ok=True)
    return "ok"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        return print_help()
    if "--help_all" in argv:
        from trl import SFTConfig, TrlParser

        return TrlParser((KitArguments, SFTConfig)).parse_args(["--help"])
    if "--sweep" in argv:
        return sweep(argv)
    kit, sft, explicit = parse(argv)
    return train(kit, sft, explicit)


if __name__ == "__main__":
    run_main(main, resume_note="to continue from the last saved checkpoint, rerun with "
                               "--resume_from_checkpoint true")
