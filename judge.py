r"""Score answers locally with the ELYZA 1-5 rubric, compare two trials, check a judge against people.

    python judge.py --answers results/<run>/output.jsonl --tasks elyza/ELYZA-tasks-100 \
        --judge_backend openai --base_url http://127.0.0.1:8000/v1 --judge_model Qwen/Qwen2.5-7B-Instruct
    python judge.py --answers results/<run>/output.jsonl --tasks data/dev_tasks.jsonl \
        --judge_backend hf --judge_model llm-jp/llm-jp-3-13b-instruct --judge_load_in_4bit
    python judge.py compare results/<run-a> results/<run-b>
    python judge.py agree --human annotated_deshuffled_preds.csv --judge_backend openai ...

Writes scores.jsonl (per task) and score.json (mean, bootstrap 95% interval, histogram, flags,
length-score correlation, judge and prompt hash) beside the answers, or into --out_dir. Task files
need reference answers (`output`) and grading notes (`eval_aspect`): the leaderboard's TV task
file has neither and is refused. API keys come from JUDGE_API_KEY (else OPENAI_API_KEY).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kit.io import KitError, iter_jsonl, run_main, write_json
from kit.judging import (add_arguments, judge_items, pearson, paired_bootstrap, quadratic_weighted_kappa,
                         score_answers, settings_from_args, spearman, warn_self_preference)
from kit.tasks import load_tasks


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers", required=True, help="output.jsonl from infer.py")
    p.add_argument("--tasks", required=True, help="tasks with reference output and eval_aspect: "
                   "JSONL, CSV, parquet or a Hub dataset name (elyza/ELYZA-tasks-100)")
    p.add_argument("--out_dir", help="default: the folder of --answers")
    add_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    if argv[:1] == ["agree"]:
        return agree_main(argv[1:])
    args = parse_args(argv)
    settings = settings_from_args(args)
    if not Path(args.answers).is_file():
        raise KitError(f"{args.answers}: no such answers file")
    tasks = load_tasks(args.tasks)
    out_dir = Path(args.out_dir or Path(args.answers).parent)
    summary = score_answers(args.answers, tasks, settings, out_dir, tasks_label=args.tasks)
    print(report_line(summary))
    print(f"scores: {out_dir / 'scores.jsonl'}, summary: {out_dir / 'score.json'}")
    return summary


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


# ---- compare -------------------------------------------------------------------------------

def scores_file(path: str) -> Path:
    """A run folder, its score.json or its scores.jsonl → the per-task scores file."""
    path = Path(path)
    candidate = path / "scores.jsonl" if path.is_dir() else (
        path.with_name("scores.jsonl") if path.name == "score.json" else path)
    if not candidate.is_file():
        raise KitError(f"{path}: no scores.jsonl (run judge.py on it first)")
    return candidate


def read_scores(path: Path) -> dict:
    scores = {}
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict) or "task_id" not in row:
            raise KitError(f"{path}:{line_no}: not a scores.jsonl row (no task_id)")
        scores[json.dumps(row["task_id"])] = row.get("score")
    return scores


def compare_main(argv) -> dict:
    p = argparse.ArgumentParser(prog="judge.py compare",
                                description="paired bootstrap of B - A over the tasks both scored")
    p.add_argument("a", help="run folder, score.json or scores.jsonl")
    p.add_argument("b")
    p.add_argument("--resamples", type=int, default=10000)
    args = p.parse_args(argv)
    if args.resamples < 100:
        raise KitError("--resamples must be at least 100")
    a_path, b_path = scores_file(args.a), scores_file(args.b)
    result = paired_bootstrap(read_scores(a_path), read_scores(b_path), args.resamples)
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


# ---- agree ---------------------------------------------------------------------------------

def read_human(path: Path, tasks_path: str | None) -> list[dict]:
    """Human-rated answers: ELYZA's annotated_deshuffled_preds.csv layout (input, output,
    eval_aspect, then per model an answer column <m> beside eval_<m>_mean), or JSONL rows
    {input, output (the rated answer), human_score[, model, reference, eval_aspect]}."""
    items = []
    if path.suffix.lower() == ".csv":
        import csv

        if not path.is_file():
            raise KitError(f"{path}: no such file")
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            models = [c[len("eval_"):-len("_mean")] for c in columns
                      if c.startswith("eval_") and c.endswith("_mean") and c[5:-5] in columns]
            if not models or not {"input", "output"} <= set(columns):
                raise KitError(f"{path}: expected columns input, output, eval_aspect and per model "
                               "<model> with eval_<model>_mean")
            for row in reader:
                for model in models:
                    try:
                        human = float(row[f"eval_{model}_mean"])
                    except (TypeError, ValueError):
                        raise KitError(f"{path}:{reader.line_num}: eval_{model}_mean is not a number") from None
                    items.append({"input": row["input"], "reference": row["output"],
                                  "eval_aspect": row.get("eval_aspect") or "", "answer": row[model] or "",
                                  "human": human, "model": model})
        return items
    references = {t["input"]: t for t in load_tasks(tasks_path)} if tasks_path else {}
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("human_score"), (int, float)):
            raise KitError(f"{path}:{line_no}: needs input, output and a numeric human_score")
        task = references.get(row.get("input"), {})
        reference = row.get("reference") or task.get("output")
        if not reference:
            raise KitError(f"{path}:{line_no}: no reference answer (a `reference` key, or --tasks "
                           "with this input)")
        items.append({"input": row["input"], "reference": reference,
                      "eval_aspect": row.get("eval_aspect") or task.get("eval_aspect", ""),
                      "answer": row.get("output") or "", "human": float(row["human_score"]),
                      "model": row.get("model", "")})
    return items


def agree_main(argv) -> dict:
    from prompts import load_judge_prompt

    p = argparse.ArgumentParser(prog="judge.py agree",
                                description="how well a judge agrees with human ratings")
    p.add_argument("--human", required=True, help="annotated_deshuffled_preds.csv or JSONL")
    p.add_argument("--tasks", help="reference answers for a JSONL without `reference`")
    p.add_argument("--out", help="write the agreement JSON here")
    add_arguments(p)
    args = p.parse_args(argv)
    settings = settings_from_args(args)
    items = read_human(Path(args.human), args.tasks)
    if not items:
        raise KitError(f"{args.human}: no rated answers")
    prompt = load_judge_prompt(settings.judge_prompt)
    mode = settings.resolved_mode()
    for item in items:
        item.update(prompt_hash=prompt.hash, prompt=prompt.render(
            item["input"], item["reference"], item["eval_aspect"], item["answer"],
            "json" if mode == "json" else "digit"))
    warn_self_preference(settings)
    results, _ = judge_items(items, settings)
    pairs = [(item, r.get("expected", r.get("grade"))) for item, r in zip(items, results)]
    pairs = [(item, float(score)) for item, score in pairs if score is not None]
    human = [item["human"] for item, _ in pairs]
    judged = [score for _, score in pairs]
    by_model = {}
    for item, score in pairs:
        by_model.setdefault(item["model"], ([], []))
        by_model[item["model"]][0].append(item["human"])
        by_model[item["model"]][1].append(score)
    model_means = {m: (sum(h) / len(h), sum(j) / len(j)) for m, (h, j) in by_model.items()}
    result = {"n": len(pairs), "n_failed": len(items) - len(pairs), "spearman": spearman(human, judged),
              "qwk": quadratic_weighted_kappa([min(5, max(1, round(h))) for h in human],
                                              [min(5, max(1, round(j))) for j in judged]),
              "model_means": {m: {"human": round(h, 4), "judge": round(j, 4)}
                              for m, (h, j) in model_means.items()},
              "model_mean_pearson": pearson([h for h, _ in model_means.values()],
                                            [j for _, j in model_means.values()]),
              "judge_backend": settings.judge_backend, "judge_model": settings.judge_model,
              "judge_mode": mode, "prompt": prompt.name, "prompt_hash": prompt.hash}
    print(f"{result['n']} rated answers ({result['n_failed']} not judged): Spearman "
          f"{result['spearman']}, quadratic-weighted kappa {result['qwk']}, "
          f"per-model means Pearson {result['model_mean_pearson']} over {len(model_means)} models")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    run_main(main, resume_note="judgments so far are cached: rerun the same command to go on")
