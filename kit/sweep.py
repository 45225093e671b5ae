"""A grid of trials (train.py --sweep): each trial trains in a process of its own, and with
--score CONFIG each trained adapter answers the dev tasks and is judged, once per inference
setting of the grid (grid keys that are infer.py settings, such as k=0,10,20).

Everything is checked before the first trial starts: every grid key, every trial's settings, the
score config's keys and files. Finished trials and scored settings are skipped on a rerun;
a failure is recorded (failed.json, the step's .log) and the sweep goes on, failing at the end.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kit.io import KitError, did_you_mean, write_json
from kit.judging.settings import JudgeSettings
from kit.runs import AnswerDir, ResultsDir, RunDir
from kit.settings import field_specs, settings_from_file, strip_options
from kit.stage_settings import InferSettings, TrainSettings
from kit.trials import collect_rows, short_table, update_trials_table

ROOT = Path(__file__).resolve().parents[1]
NAMED_IN_RUN = ("lora_r", "lora_alpha", "learning_rate", "num_train_epochs", "max_steps", "template")


@dataclass
class Trial:
    name: str
    argv: list  # train.py's arguments for this trial
    run: RunDir
    model: str


def split_grid(specs: list[str], training_keys: set) -> tuple[list, list]:
    """(training axes, inference axes): each axis [(key, value), ...]."""
    infer_keys = {s.name for s in field_specs(InferSettings)}
    judge_keys = {s.name for s in field_specs(JudgeSettings)}
    train_axes, infer_axes = [], []
    for spec in specs:
        key, _, values = spec.partition("=")
        if not values or not all(values.split(",")):
            raise KitError(f"--sweep takes key=v1,v2 (got {spec!r})")
        if key in judge_keys:
            raise KitError(f"--sweep {key}: judge settings belong in the --score config; trials judged "
                           "differently cannot be compared")
        if key not in training_keys | infer_keys:
            raise KitError(f"--sweep: unknown key {did_you_mean([key], training_keys | infer_keys)}")
        axis = [(key, value) for value in values.split(",")]
        (train_axes if key in training_keys else infer_axes).append(axis)
    return train_axes, infer_axes


def plan_trials(base: list[str], train_axes: list, run_name_prefix: str | None) -> list[Trial]:
    """Every trial's settings, parsed and checked now: a typo fails before anything trains."""
    from kit.training import parse_train, run_name, sft_config

    trials = []
    for combo in itertools.product(*train_axes):
        argv = base + [f"--{key}={value}" for key, value in combo]
        settings, info = parse_train(argv)
        sft, explicit = sft_config(info)
        extra = [f"{k}{v}" for k, v in combo if k not in NAMED_IN_RUN]
        if run_name_prefix:
            name = "-".join([run_name_prefix, *(f"{k}{v}" for k, v in combo)]) if combo else run_name_prefix
        else:
            name = "-".join([run_name(settings, sft, explicit - {"run_name"}), *extra])
        argv += [f"--run_name={name}"]
        trials.append(Trial(name, argv, ResultsDir(settings.results_dir).run(name), settings.model_name_or_path))
    return trials


def check_score_config(path: str) -> None:
    """A --score config is infer.py's and the judge's settings in one file, with the dev tasks."""
    from kit.io import load_yaml
    from kit.readers import looks_like_hub_name

    config = load_yaml(path)
    if "tasks" not in config:
        raise KitError(f"{path}: a --score config needs `tasks` (dev tasks with reference outputs)")
    settings_from_file(JudgeSettings, path, also_known=(InferSettings,))
    for key in ("tasks", "reference"):
        value = str(config.get(key) or "")
        if value and not Path(value).exists() and not (key == "tasks" and looks_like_hub_name(value)):
            raise KitError(f"{path}: {key} {value}: no such file")


def run_step(module: str, args: list[str], out: AnswerDir, stage: str, label: str, inference: str = "") -> str:
    """`python -m <module> args` in a child (the kit's folder on its path), its output streamed
    here and into out/<stage>.log; "ok" or "failed" (failed.json holds its last line)."""
    out.path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    last = ""
    with open(out.log(stage), "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            if line.strip() and "%|" not in line:  # progress bars are not the message
                last = line.strip()
        process.wait()
    if process.returncode != 0:
        write_json(out.failed, {"returncode": process.returncode, "error": last or "(no message)",
                                "inference": inference, "argv": args})
        print(f"{label}: FAILED ({last}); continuing", file=sys.stderr)
        return "failed"
    out.failed.unlink(missing_ok=True)
    return "ok"


def score_trial(trial: Trial, score: str, variants: list, overwrite: bool, label: str) -> list[dict]:
    outcomes = []
    for variant in variants:
        setting = "-".join(f"{k}{v}" for k, v in variant)
        out = trial.run.infer_dir(setting)
        if out.score.exists() and not overwrite:
            print(f"{label} {setting or 'default inference'}: already scored, skipped")
            continue
        results = trial.run.path.parent
        args = ["--config", score, "--judge", score, "--model", trial.model, "--adapter", str(trial.run.adapter),
                "--results_dir", str(results), "--run_name", str(out.path.relative_to(results)),
                "--output", str(out.output), *[f"--{k}={v}" for k, v in variant]]
        status = run_step("infer", args, out, "infer", f"{label} {setting or 'infer'}", inference=setting)
        outcomes.append({"run": trial.name, "inference": setting, "status": status})
    return outcomes


def run_sweep(argv: list[str], settings: TrainSettings) -> list[dict]:
    """Train (and with settings.score, answer and judge) every trial of settings.sweep."""
    from kit.training import sft_field_names

    base = strip_options(argv, ("sweep", "score"), (TrainSettings,))
    keys = sft_field_names() | {s.name for s in field_specs(TrainSettings)}
    train_axes, infer_axes = split_grid(settings.sweep, keys)
    if infer_axes and not settings.score:
        raise KitError(f"--sweep: {', '.join(a[0][0] for a in infer_axes)} is an inference setting; "
                       "scoring trials needs --score CONFIG")
    if settings.score:
        check_score_config(settings.score)
    prefix = next((t.split("=", 1)[1] for t in base if t.startswith("--run_name=")), None)
    if prefix is None and "--run_name" in base:
        prefix = base[base.index("--run_name") + 1]
    trials = plan_trials(strip_options(base, ("run_name",), (TrainSettings,)), train_axes, prefix)
    variants = [list(combo) for combo in itertools.product(*infer_axes)]
    outcomes = []
    for index, trial in enumerate(trials, 1):
        label = f"[{index}/{len(trials)}] {trial.name}"
        if trial.run.metrics.exists() and not settings.overwrite:
            print(f"{label}: already trained, skipped")
            status = "skipped"
        else:
            print(label)
            status = run_step("train", trial.argv, trial.run, "train", label)
        outcomes.append({"run": trial.name, "status": status})
        if settings.score and status != "failed":
            outcomes += score_trial(trial, settings.score, variants, settings.overwrite, label)
    update_trials_table(settings.results_dir)
    results = ResultsDir(settings.results_dir)
    print(short_table(collect_rows(results.path)))
    print(f"every column: {results.trials_md}; picture: {results.trials_png}")
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        steps = ", ".join(o["run"] + ("/" + o["inference"] if o.get("inference") else "") for o in failed)
        raise KitError(f"{len(failed)} of {len(outcomes)} sweep step(s) failed: {steps} "
                       "(see failed.json and the .log files)")
    return outcomes
