"""What train.py and the sweep share: reading train's settings (the kit's own options first, without
trl; then every SFTConfig field through trl's TrlParser), the run's name and resolved config,
the trainer's callbacks, and the run's metrics and loss plot."""
from __future__ import annotations

import difflib
from dataclasses import MISSING, fields
from enum import Enum

from kit.io import KitError, did_you_mean
from kit.runs import run_name_for
from kit.settings import field_specs, parse_settings
from kit.stage_settings import TrainSettings

COMMON_SFT_OPTIONS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                      "gradient_accumulation_steps", "max_length", "warmup_steps", "lr_scheduler_type",
                      "optim", "weight_decay", "neftune_noise_alpha", "bf16", "gradient_checkpointing",
                      "logging_steps", "eval_steps", "save_steps", "seed", "report_to", "run_name",
                      "resume_from_checkpoint")
# SFTConfig fields the kit sets per run, not part of a recipe
DERIVED = {"output_dir", "logging_dir", "hub_token", "push_to_hub_token", "run_name",
           "include_num_input_tokens_seen", "completion_only_loss"}
HELP_EPILOG = ("every SFTConfig field works too; the usual ones:\n  "
               + " ".join(f"--{name}" for name in COMMON_SFT_OPTIONS)
               + "\npython train.py --help_all lists them all (imports trl: a few seconds)")


def parse_train(argv, doc: str = "", check: bool = True):
    """(TrainSettings, ParseInfo) from flags and --config: quick, trl is not imported; the flags
    and keys the kit does not own are left in ParseInfo for sft_config(). When a check fails and
    one of those is a near miss of a kit option (lora_rank), the typo is what gets reported."""
    settings, info = parse_settings(TrainSettings, argv, prog="train.py", doc=doc, epilog=HELP_EPILOG,
                                    known_only=True, check=False)
    if check:
        try:
            settings.check()
        except KitError:
            kit_names = {spec.name for spec in field_specs(TrainSettings)}
            given = [*info.extra_config, *(t[2:].split("=")[0] for t in info.extra_argv if t.startswith("--"))]
            typos = [name for name in given if difflib.get_close_matches(name, kit_names, 1, 0.8)]
            if typos:
                raise KitError(f"{info.config_path or 'train.py'}: unknown key(s): "
                               f"{did_you_mean(typos, kit_names)}") from None
            raise
    return settings, info


def sft_field_names() -> set:
    from trl import SFTConfig

    return {f.name for f in fields(SFTConfig)}


def sft_config(info):
    """(SFTConfig, the SFT fields set explicitly), built once: SFTConfig's __post_init__ resets
    accelerate's shared state, so a second one would stop distributed ranks from syncing."""
    from trl import SFTConfig, TrlParser

    class Parser(TrlParser):
        def error(self, message):  # one line, not the usage of some 200 options
            raise KitError(f"bad training argument: {message}")

    valid = sft_field_names()
    kit_names = {spec.name for spec in field_specs(TrainSettings)}
    unknown = sorted(set(info.extra_config) - valid)
    if unknown:
        raise KitError(f"{info.config_path}: unknown key(s): {did_you_mean(unknown, valid | kit_names)}")
    flags = {token[2:].split("=")[0] for token in info.extra_argv if token.startswith("--")}
    if "push_to_hub" in flags | set(info.extra_config):
        raise KitError("the kit pushes the adapter itself: use --push_adapter_to REPO (token from HF_TOKEN)")
    parser = Parser((SFTConfig,), allow_abbrev=False)
    parser.set_defaults_with_config(**info.extra_config)
    try:
        sft, rest = parser.parse_args_into_dataclasses(args=info.extra_argv, return_remaining_strings=True)
    except ValueError as err:
        hint = (" (no GPU here: SFTConfig defaults to bf16 on a GPU; pass --bf16 false --use_cpu true, "
                "or a CPU recipe such as --config configs/tiny_cpu.yaml)" if "bf16" in str(err) else "")
        raise KitError(f"bad training arguments: {err}{hint}") from None
    if rest:
        options = {f"--{n}" for n in valid | kit_names}
        flags_left = [t.split("=")[0] for t in rest if t.startswith("-")] or rest
        raise KitError(f"unknown option(s): {did_you_mean(flags_left, options)}")
    check_sft(sft)
    return sft, (set(info.extra_config) | flags) & valid


def check_sft(sft) -> None:
    problems = [] if sft.learning_rate > 0 else [f"learning_rate must be > 0 (got {sft.learning_rate})"]
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(sft, name) < 1:
            problems.append(f"{name} must be at least 1 (got {getattr(sft, name)})")
    if sft.max_length is not None and sft.max_length < 1:
        problems.append(f"max_length must be at least 1 (got {sft.max_length})")
    if problems:
        raise KitError("; ".join(problems))


def run_name(settings: TrainSettings, sft, explicit: set) -> str:
    if sft.run_name and "run_name" in explicit:
        return sft.run_name
    return run_name_for(settings.lora_r, settings.lora_alpha, sft.learning_rate, sft.max_steps,
                        sft.num_train_epochs, settings.template, settings.loss_on)


def print_help_all() -> None:
    from trl import SFTConfig, TrlParser

    TrlParser((SFTConfig,)).print_help()


def _plain(value):
    return value.value if isinstance(value, Enum) else value


def resolved_config(settings: TrainSettings, sft) -> dict:
    """What reproduces the run: the kit's options, and every SFTConfig value that is not its
    field's default (plus the ones whose default differs between a CPU and a GPU)."""
    from trl import SFTConfig

    config = {spec.name: getattr(settings, spec.name) for spec in field_specs(TrainSettings)
              if spec.name not in ("sweep", "score", "overwrite")}
    defaults = {f.name: f.default for f in fields(SFTConfig) if f.default is not MISSING}
    always = ("bf16", "learning_rate", "gradient_checkpointing", "report_to")
    for key, value in sft.to_dict().items():  # to_dict masks *_token values: compare the attributes
        changed = key not in defaults or _plain(getattr(sft, key, value)) != _plain(defaults[key])
        if key not in DERIVED and (key in always or changed):
            config[key] = value
    return config


def progress_callback():
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

    return ProgressCallback, KitProgress


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


def collect_metrics(trainer, result, runtime, session, backend, counts) -> dict:
    from kit.models import package_versions, peak_memory

    history = trainer.state.log_history
    train_loss = [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h]
    eval_loss = [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h]
    tokens = trainer.state.num_input_tokens_seen
    session_tokens = tokens - session.tokens_at_start
    return {"backend": backend, "train_loss": train_loss, "eval_loss": eval_loss,
            "final_train_loss": train_loss[-1]["loss"] if train_loss else None,
            # over every logged step of the run, a resumed one included (the trainer's own
            # training_loss covers only this process's steps)
            "mean_train_loss": round(sum(p["loss"] for p in train_loss) / len(train_loss), 6) if train_loss else None,
            "best_eval_loss": min((e["loss"] for e in eval_loss), default=None),
            "last_eval_loss": eval_loss[-1]["loss"] if eval_loss else None,
            "global_step": trainer.state.global_step, "epochs_run": round(trainer.state.epoch or 0, 2),
            "resumed_from_step": session.step_at_start or None, "runtime_s": round(runtime, 2),
            "train_tokens": int(tokens), "session_tokens": int(session_tokens),
            "train_tokens_per_s": round(session_tokens / runtime, 1),
            **peak_memory(), **counts, "versions": package_versions()}


def no_data(axis, why: str) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    axis.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", transform=axis.transAxes)


def plot_losses(metrics: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kit.io import atomic_open

    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        points = metrics[key]
        if points:
            axis.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".", label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("loss (lower is better)")
    axis.set_title(metrics["run"])
    if metrics["train_loss"] or metrics["eval_loss"]:
        axis.legend()
    else:
        no_data(axis, "no logged steps (logging_steps is larger than the run)")
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)

