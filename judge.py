r"""Score answers locally with the ELYZA 1-5 rubric, compare two trials, check a judge against ratings.

    python judge.py --answers results/<run>/output.jsonl --tasks elyza/ELYZA-tasks-100 \
        --judge_backend openai --base_url http://127.0.0.1:8000/v1 --judge_model Qwen/Qwen2.5-7B-Instruct
    python judge.py --answers results/<run>/output.jsonl --tasks data/dev_tasks.jsonl \
        --judge_backend hf --judge_model llm-jp/llm-jp-3-13b-instruct --judge_load_in_4bit
    python judge.py compare results/<run-a> results/<run-b>      # is B really better than A?
    python judge.py agree --human annotated_deshuffled_preds.csv --judge_backend openai ...

Writes scores.jsonl (per task) and score.json (mean, bootstrap 95% interval, histogram, flags,
length-score correlation, judge and prompt hash) beside the answers, or into --out_dir. Task files
need reference answers (`output`) and grading notes (`eval_aspect`): the leaderboard's TV task
file has neither and is refused. API keys come from JUDGE_API_KEY (else OPENAI_API_KEY).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kit.io import KitError, iter_jsonl, run_main, write_json
from kit.judging import JudgeSettings, paired_bootstrap, score_answers
from kit.runs import AnswerDir, task_key
from kit.settings import existing_file, opt, parse_settings
from kit.tasks import load_tasks


@dataclass
class ScoreInputs:
    """what to score"""
    answers: str = opt(None, "output.jsonl from infer.py", required=True)
    tasks: str = opt(None, "tasks with reference output and eval_aspect: JSONL, CSV, parquet or a Hub "
                           "dataset name (elyza/ELYZA-tasks-100)", required=True)
    out_dir: str | None = opt(None, "default: the folder of --answers")

    def check(self) -> None:
        existing_file(self.answers, "--answers")


@dataclass
class CompareInputs:
    """the two scored runs"""
    a: str = opt(None, "run folder, score.json or scores.jsonl", required=True, positional=True)
    b: str = opt(None, "the same for the other trial", required=True, positional=True)
    resamples: int = opt(10000, "bootstrap resamples")

    def check(self) -> None:
        if self.resamples < 100:
            raise KitError("--resamples must be at least 100")


@dataclass
class AgreeInputs:
    """the rated answers"""
    human: str = opt(None, "annotated_deshuffled_preds.csv or JSONL with human_score", required=True)
    tasks: str | None = opt(None, "reference answers for a JSONL without `reference`")
    out: str | None = opt(None, "write the agreement JSON here")

    def check(self) -> None:
        existing_file(self.human, "--human")


def report_line(summary: dict) -> str:
    ci = summary["ci95"]
    interval = f" (95% interval {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
    score = "n/a" if summary["score"] is None else f"{summary['score']:.3f}"
    flags = ", ".join(f"{k} {v}" for k, v in sorted(summary["flag_counts"].items())) or "none"
    line = (f"score {score}{interval} over {summary['n']} tasks, {summary['n_failed']} failed; "
            f"judge {summary['judge_backend']}:{summary['judge_model']} ({summary['judge_mode']}, "
            f"prompt {summary['prompt']}@{summary['prompt_hash']}); flags: {flags}")
    if summary.get("task_overlaps"):
        line += f"\nwarning: {len(summary['task_overlaps'])} task(s) overlap the few-shot or training data"
    return line


def score_main(argv) -> dict:
    (inputs, settings), _ = parse_settings((ScoreInputs, JudgeSettings), argv, prog="judge.py", doc=__doc__)
    tasks = load_tasks(inputs.tasks)
    out = AnswerDir(inputs.out_dir or Path(inputs.answers).parent)
    summary = score_answers(inputs.answers, tasks, settings, out.path, tasks_label=inputs.tasks)
    print(report_line(summary))
    print(f"scores: {out.scores}, summary: {out.score}")
    return summary


def scores_file(path: str) -> Path:
    """A run folder, its score.json or its scores.jsonl → the per-task scores file."""
    path = Path(path)
    candidate = AnswerDir(path).scores if path.is_dir() else (
        AnswerDir(path.parent).scores if path.name == AnswerDir(path.parent).score.name else path)
    if not candidate.is_file():
        raise KitError(f"{path}: no scores.jsonl (run judge.py on it first)")
    return candidate


def read_scores(path: Path) -> dict:
    scores = {}
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict) or "task_id" not in row:
            raise KitError(f"{path}:{line_no}: not a scores.jsonl row (no task_id)")
        scores[task_key(row["task_id"])] = row.get("score")
    return scores


def compare_main(argv) -> dict:
    inputs, _ = parse_settings(CompareInputs, argv, prog="judge.py compare",
                               doc="paired bootstrap of B - A over the tasks both scored")
    a_path, b_path = scores_file(inputs.a), scores_file(inputs.b)
    result = paired_bootstrap(read_scores(a_path), read_scores(b_path), inputs.resamples)
    low, high = result["ci95"]
    print(f"A {a_path}: {result['mean_a']:.3f}   B {b_path}: {result['mean_b']:.3f}   over {result['n']} tasks")
    print(f"B - A = {result['difference']:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}]; "
          f"B better on {result['better']}, worse on {result['worse']}, same on {result['same']}")
    if result["interval_contains_zero"]:
        print("The interval contains 0: these tasks give no evidence that B and A differ.")
    else:
        print(f"The interval excludes 0: B is {'better' if result['difference'] > 0 else 'worse'} "
              "than A on tasks like these.")
    return result


def agree_main(argv) -> dict:
    from kit.judging.agreement import agreement, read_rated

    (inputs, settings), _ = parse_settings((AgreeInputs, JudgeSettings), argv, prog="judge.py agree",
                                           doc="how well a judge agrees with rated answers")
    items = read_rated(Path(inputs.human), inputs.tasks)
    if not items:
        raise KitError(f"{inputs.human}: no rated answers")
    result = agreement(items, settings)
    print(f"{result['n']} rated answers ({result['n_failed']} not judged): Spearman "
          f"{result['spearman']}, quadratic-weighted kappa {result['qwk']}, "
          f"per-model means Pearson {result['model_mean_pearson']} over {len(result['model_means'])} models")
    if inputs.out:
        write_json(inputs.out, result)
    return result


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compare": compare_main, "agree": agree_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return score_main(argv)


if __name__ == "__main__":
    run_main(main, resume_note="judgments so far are cached: rerun the same command to go on")
