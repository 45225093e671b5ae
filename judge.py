r"""Score answers locally with the ELYZA 1-5 rubric, compare two trials, check a judge against ratings.

    python judge.py --answers results/<run>/output.jsonl --tasks elyza/ELYZA-tasks-100 \
        --judge_backend openai --base_url http://127.0.0.1:8000/v1 --judge_model Qwen/Qwen2.5-7B-Instruct
    python judge.py --answers results/<run>/output.jsonl --tasks data/dev_tasks.jsonl \
        --judge_backend hf --judge_model llm-jp/llm-jp-3-13b-instruct --judge_load_in_4bit
    python judge.py compare results/<run-a> results/<run-b>      # is B really better than A?
    python judge.py agree --human reference_graded_answers.jsonl --judge_backend openai ...
    python judge.py flags --answers results/<run>/output.jsonl --tasks data/dev_tasks.jsonl  # no judge

Writes scores.jsonl (per task) and score.json (mean, bootstrap 95% interval, histogram, flags,
length-score correlation, judge and prompt hash) beside the answers, or into --out_dir. Task files
need reference answers (`output`), so the leaderboard's TV task file is refused; tasks without
grading notes (`eval_aspect`) are judged on the general rubric, with a warning. API keys come
from JUDGE_API_KEY (else OPENAI_API_KEY).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kit.io import KitError, check_output, run_main, write_json, write_jsonl
from kit.judging import JudgeSettings, score_answers
from kit.judging.scoring import read_scores, score_line
from kit.judging.stats import COMPARED_SETTINGS, compare_scores
from kit.runs import AnswerDir, RunDir, read_json, task_key
from kit.settings import existing_file, opt, parse_settings
from kit.tasks import load_tasks


@dataclass
class AnswersInputs:
    """the answers (judge.py and judge.py flags)"""
    answers: str = opt(None, "output.jsonl from infer.py", required=True)
    tasks: str = opt(None, "the task file the answers are for: JSONL, CSV, parquet or a Hub dataset name "
                           "(elyza/ELYZA-tasks-100); scoring needs its reference `output`", required=True)
    out_dir: str | None = opt(None, "where scores (or flags.jsonl) go; default: the folder of --answers")

    def check(self) -> None:
        existing_file(self.answers, "--answers")


@dataclass
class CompareInputs:
    """the two scored runs"""
    a: str = opt(None, "run folder (a sweep's, or its infer/<setting>/), score.json or scores.jsonl",
                 required=True, positional=True)
    b: str = opt(None, "the same for the other trial", required=True, positional=True)
    resamples: int = opt(10000, "bootstrap resamples")
    json: str | None = opt(None, "also write the result as JSON here")
    allow_different_judges: bool = opt(False, "compare runs judged differently (the result says so)")

    def check(self) -> None:
        if self.resamples < 100:
            raise KitError("--resamples must be at least 100")


@dataclass
class AgreeInputs:
    """the rated answers"""
    human: str = opt(None, "annotated_deshuffled_preds.csv, or JSONL with human_score (such as a "
                            "reference_graded_answers.jsonl)", required=True)
    tasks: str | None = opt(None, "reference answers for a JSONL without `reference`")
    out_dir: str = opt("results/agree", "agree_items.jsonl and agree.json go here")

    def check(self) -> None:
        existing_file(self.human, "--human")


def report_line(summary: dict) -> str:
    flags = ", ".join(f"{k} {v}" for k, v in sorted(summary["flag_counts"].items())) or "none"
    line = (f"{score_line(summary)}; "
            f"judge {summary['judge_backend']}:{summary['judge_model']} ({summary['judge_mode']}, "
            f"prompt {summary['prompt']}@{summary['prompt_hash']}); flags: {flags}")
    if summary.get("task_overlaps"):
        line += f"\nwarning: {len(summary['task_overlaps'])} task(s) overlap the few-shot or training data"
    return line


def score_main(argv) -> dict:
    (inputs, settings), _ = parse_settings((AnswersInputs, JudgeSettings), argv, prog="judge.py", doc=__doc__)
    out = AnswerDir(inputs.out_dir or Path(inputs.answers).parent)
    for path, flag in ((out.score, "--out_dir"), (Path(settings.cache_dir) / "00" / "check.json", "--cache_dir")):
        check_output(path, {"--answers": inputs.answers}, flag)  # before any request is sent
    tasks = load_tasks(inputs.tasks)
    summary = score_answers(inputs.answers, tasks, settings, out.path, tasks_label=inputs.tasks)
    print(report_line(summary))
    print(f"scores: {out.scores}, summary: {out.score}")
    print(f"next: python judge.py compare {out.path} <another scored run>   (is the difference real?)")
    return summary


def flags_main(argv) -> dict:
    from kit.judging.flags import rule_flags
    from kit.judging.scoring import generations_beside, read_answers

    inputs, _ = parse_settings(AnswersInputs, argv, prog="judge.py flags",
                               doc="The judge's rule flags without any model: what to look at before paying "
                                   "for a judge.")
    out = AnswerDir(inputs.out_dir or Path(inputs.answers).parent)
    generations = generations_beside(inputs.answers, out.path)
    rows = [{"task_id": a["task"]["task_id"],
             "flags": dict.fromkeys(rule_flags(a["answer"], a["task"]["input"],
                                               generations.get(task_key(a["task"]["task_id"]))), True)}
            for a in read_answers(inputs.answers, load_tasks(inputs.tasks))]
    path = out.path / "flags.jsonl"
    write_jsonl(path, rows)
    counts = {}
    for row in rows:
        for flag in row["flags"]:
            counts[flag] = counts.get(flag, 0) + 1
    for flag, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{flag:<18}{count:>5} of {len(rows)}")
    print(f"{'(none)' if not counts else ''}flags per answer: {path}")
    return counts


def scored_folder(path: str) -> AnswerDir:
    """A run folder, its score.json or its scores.jsonl → the folder holding scores.jsonl; a sweep's
    run folder with one scored inference setting is that setting's folder."""
    given = Path(path)
    folder = AnswerDir(given if given.is_dir() else given.parent)
    if folder.scores.is_file():
        return folder
    settings = [d for _, d in RunDir(folder.path).answer_dirs()[1:] if d.scores.is_file()]
    if len(settings) == 1:
        return settings[0]
    if settings:
        raise KitError(f"{path} has {len(settings)} scored inference settings; name one: "
                       + ", ".join(str(d.path) for d in settings))
    raise KitError(f"{path}: no scores.jsonl (run judge.py on it first)")


def judge_differences(a: AnswerDir, b: AnswerDir) -> list[str]:
    """How the two runs were judged differently (COMPARED_SETTINGS of their score.json)."""
    a_judge, b_judge = read_json(a.score), read_json(b.score)
    return [f"{key} {a_judge.get(key)!r} vs {b_judge.get(key)!r}" for key in COMPARED_SETTINGS
            if a_judge.get(key) != b_judge.get(key)]


def compare_main(argv) -> dict:
    inputs, _ = parse_settings(CompareInputs, argv, prog="judge.py compare",
                               doc="Is B better than A? A paired bootstrap of B - A over the tasks both scored.")
    a, b = scored_folder(inputs.a), scored_folder(inputs.b)
    differences = judge_differences(a, b)
    if differences and not inputs.allow_different_judges:
        raise KitError("the two runs were judged differently (" + "; ".join(differences) + "): scores from "
                       "different judges or settings are not comparable; rescore one, or pass "
                       "--allow_different_judges")
    result = compare_scores(read_scores(a.scores), read_scores(b.scores), inputs.resamples)
    result.update(a=str(a.path), b=str(b.path), judged_differently=differences)
    low, high = result["ci95"]
    print(f"A {a.path}: {result['mean_a']:.3f}   B {b.path}: {result['mean_b']:.3f}   "
          f"over {result['paired_tasks']} paired tasks ({result['left_out']} left out: scored in one run only)")
    print(f"B - A = {result['difference']:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}]; B better on "
          f"{result['better']}, worse on {result['worse']}, same on {result['same']}")
    against = " than A" if result["verdict"] != "not distinguishable" else " from A on these tasks"
    print(f"verdict: B is {result['verdict']}{against}; the smallest difference these tasks could detect is "
          f"about {result['smallest_detectable_difference']:.2f}")
    if differences:
        print("warning: judged differently (" + "; ".join(differences) + "): this comparison mixes judges")
    if inputs.json:
        write_json(inputs.json, result)
    return result


def agree_main(argv) -> dict:
    from kit.judging.agreement import agreement, agreement_table, read_rated

    (inputs, settings), _ = parse_settings((AgreeInputs, JudgeSettings), argv, prog="judge.py agree",
                                           doc="how well a judge agrees with rated answers, through the "
                                               "same pipeline that scores trials")
    check_output(Path(inputs.out_dir) / "agree.json", {"--human": inputs.human})
    items = read_rated(Path(inputs.human), inputs.tasks)
    if not items:
        raise KitError(f"{inputs.human}: no rated answers")
    result = agreement(items, settings, inputs.out_dir)
    print(agreement_table(result))
    print(f"per answer: {Path(inputs.out_dir) / 'agree_items.jsonl'}, summary: {Path(inputs.out_dir) / 'agree.json'}")
    return result


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compare": compare_main, "agree": agree_main, "flags": flags_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return score_main(argv)


if __name__ == "__main__":
    run_main(main, resume_note="judgments so far are cached: rerun the same command to go on")
