"""Where a run's files live. Scripts ask these objects for paths and never spell a file name.

    results/                      ResultsDir: trials.csv, TRIALS.md, trials.png, .cache/
      <run>/                      RunDir: config.yaml, metrics.json, loss.png, adapter/,
                                  checkpoints/, wandb/, train.log, failed.json, and, as an
                                  AnswerDir, the files of `infer.py --judge` on the run
        infer/<setting>/          AnswerDir of a scored sweep's inference setting

An AnswerDir holds answers and what was measured on them: output.jsonl, prompts.jsonl,
generations.jsonl, infer_metrics.json, scores.jsonl, score.json, infer.log, failed.json.
"""
from __future__ import annotations

import json
from pathlib import Path


def task_key(task_id) -> str:
    """A task id as a dictionary key: 1 and "1" are different tasks."""
    return json.dumps(task_id)


def read_json(path: Path) -> dict:
    """A JSON object the kit wrote, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def with_files(**names):
    """Class decorator: each keyword becomes a property, the path of that file in the folder."""
    def decorate(cls):
        for attribute, name in names.items():
            setattr(cls, attribute, property(lambda self, name=name: self.path / name))
        return cls
    return decorate


@with_files(output="output.jsonl", prompts="prompts.jsonl", generations="generations.jsonl",
            infer_metrics="infer_metrics.json", scores="scores.jsonl", score="score.json", failed="failed.json")
class AnswerDir:
    """A folder of answers and of what was measured on them."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def log(self, stage: str) -> Path:
        return self.path / f"{stage}.log"


@with_files(config="config.yaml", metrics="metrics.json", loss_plot="loss.png", adapter="adapter",
            checkpoints="checkpoints", wandb="wandb")
class RunDir(AnswerDir):
    """results/<run>/: one training run."""

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def of_adapter(cls, adapter) -> RunDir | None:
        """The run an adapter folder was trained in (results/<run>/adapter), if it has one."""
        if not adapter:
            return None
        run = cls(Path(adapter).expanduser().resolve().parent)
        return run if run.config.is_file() else None

    def read_config(self) -> dict:
        if not self.config.is_file():
            return {}
        from kit.io import load_yaml

        return load_yaml(self.config)

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def infer_dir(self, setting: str) -> AnswerDir:
        return AnswerDir(self.path / "infer" / setting) if setting else self

    def answer_dirs(self) -> list[tuple[str, AnswerDir]]:
        """(inference setting, folder) of every scored or failed inference of this run: the run
        folder itself (infer.py --judge) and infer/<setting>/ (a scored sweep)."""
        found = [("", self)]
        found += [(p.name, AnswerDir(p)) for p in sorted((self.path / "infer").glob("*")) if p.is_dir()]
        return found


@with_files(trials_csv="trials.csv", trials_md="TRIALS.md", trials_png="trials.png", cache=".cache")
class ResultsDir:
    """results/: the runs and their trial table."""

    def __init__(self, path):
        self.path = Path(path)

    def run(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    def runs(self) -> list[RunDir]:
        return [RunDir(p) for p in sorted(self.path.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def bench_result(name: str, committed: bool = False) -> Path:
    """Where a benchmark writes: results/bench/<name>; with committed, bench/results/<name>, the
    figures the README cites (a quick try never replaces them)."""
    root = Path(__file__).resolve().parents[1]
    return root / ("bench/results" if committed else "results/bench") / name


def run_name_for(lora_r: int, lora_alpha: int, learning_rate: float, max_steps: int,
                 num_train_epochs: float, template: str, loss_on: str) -> str:
    """A training run's default name from what tells trials apart: r8-a16-lr0.01-s120-alpaca_ja."""
    length = f"s{max_steps}" if max_steps > 0 else f"e{num_train_epochs:g}"
    name = f"r{lora_r}-a{lora_alpha}-lr{learning_rate:g}-{length}-{template}"
    return name + (f"-loss{loss_on}" if loss_on != "completion" else "")


ANSWER_SETTINGS = ("model", "adapter", "tasks", "reference", "k", "retriever", "retriever_model", "template",
                   "load_in_4bit", "max_new_tokens", "context_length", "repetition_penalty", "do_sample",
                   "temperature", "top_p", "top_k", "seed", "ban", "stop", "cut_after")


def answers_fingerprint(settings) -> str:
    """What produced an answer: a hash of every setting that changes it (model, adapter, tasks,
    retrieval, template, decoding), recorded with each answer so a resume keeps only its own."""
    import hashlib

    answers = json.dumps([getattr(settings, name) for name in ANSWER_SETTINGS], ensure_ascii=False)
    return hashlib.sha256(answers.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def progress_path(output) -> Path:
    """Where an unfinished infer.py run keeps its answers: <stem>.progress.jsonl beside the output,
    which is replaced only when the run is complete."""
    output = Path(output)
    return output.with_name(f"{output.stem}.progress.jsonl")


def answers_folder(settings, explicit: set) -> AnswerDir:
    """Where an infer.py run's answers and files go: --results_dir/--run_name when given; else
    beside the adapter's training run, in infer/<task file>-<hash of what changes the answers>/
    (a run keeps its training, answers and scores together, and other tasks or settings never
    overwrite it); without an adapter, results/infer-<model>/<task file>-<hash>/."""
    run = RunDir.of_adapter(settings.adapter)
    if {"results_dir", "run_name"} & explicit:
        default = run.name if run else f"infer-{Path(settings.model).name}"
        return AnswerDir(Path(settings.results_dir) / (settings.run_name or default))
    setting = f"{Path(settings.tasks).stem}-{answers_fingerprint(settings)}"
    if run is not None:
        return run.infer_dir(setting)
    return AnswerDir(Path(settings.results_dir) / f"infer-{Path(settings.model).name}" / setting)
