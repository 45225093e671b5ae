"""How well a judge agrees with rated answers (judge.py agree): per item, and on per-model means,
which is what decides between trials."""
from __future__ import annotations

from pathlib import Path

from kit.io import KitError, iter_jsonl, write_json, write_jsonl
from kit.judging.scoring import judge_rows
from kit.judging.settings import JudgeSettings
from kit.judging.stats import pearson, quadratic_weighted_kappa, spearman


def read_rated(path: Path, tasks_path: str | None) -> list[dict]:
    """Rated answers: ELYZA's annotated_deshuffled_preds.csv layout (input, output, eval_aspect,
    then per model an answer column <m> beside eval_<m>_mean), or JSONL rows {input, output (the
    rated answer), human_score[, model, task_id, reference, eval_aspect]}, such as a
    reference_graded_answers.jsonl."""
    if path.suffix.lower() == ".csv":
        return _rated_csv(path)
    from kit.tasks import load_tasks

    references = {t["input"]: t for t in load_tasks(tasks_path)} if tasks_path else {}
    items = []
    for line_no, row in iter_jsonl(path):
        human = row.get("human_score") if isinstance(row, dict) else None
        if not isinstance(human, (int, float)) or isinstance(human, bool) or not 1 <= human <= 5:
            raise KitError(f"{path}:{line_no}: needs a human_score from 1 to 5 (got {human!r})")
        if not isinstance(row.get("input"), str) or not isinstance(row.get("output", ""), str):
            raise KitError(f"{path}:{line_no}: needs a string `input` and `output` (the rated answer)")
        task = references.get(row["input"], {})
        reference = row.get("reference") or task.get("output")
        if not reference:
            raise KitError(f"{path}:{line_no}: no reference answer (a `reference` key, or --tasks "
                           "with this input)")
        items.append({"input": row["input"], "reference": reference, "answer": row.get("output") or "",
                      "eval_aspect": row.get("eval_aspect") or task.get("eval_aspect", ""),
                      "human": float(human), "model": str(row.get("model", "")),
                      "task_id": row.get("task_id", task.get("task_id", line_no))})
    return items


def _rated_csv(path: Path) -> list[dict]:
    from kit.readers import read_records

    rows = read_records(path)
    columns = set(rows[0][1]) if rows else set()
    models = [c[len("eval_"):-len("_mean")] for c in sorted(columns)
              if c.startswith("eval_") and c.endswith("_mean") and c[5:-5] in columns]
    if not models or not {"input", "output"} <= columns:
        raise KitError(f"{path}: expected columns input, output, eval_aspect and per model "
                       "<model> with eval_<model>_mean")
    items = []
    for number, (line, row) in enumerate(rows):
        for model in models:
            try:
                human = float(row[f"eval_{model}_mean"])
            except (KeyError, TypeError, ValueError):
                raise KitError(f"{path}:{line}: eval_{model}_mean is not a number") from None
            items.append({"input": row["input"], "reference": row["output"], "task_id": number,
                          "eval_aspect": row.get("eval_aspect") or "", "answer": row.get(model) or "",
                          "human": human, "model": model})
    return items


def agreement(items: list[dict], settings: JudgeSettings, out_dir) -> dict:
    """Score every rated answer as judge.py scores answers (flags, empty = 1, cache); write
    agree_items.jsonl and agree.json into out_dir; return the summary."""
    rows, judged = judge_rows(items, settings)
    pairs = [(item, row["score"]) for item, row in zip(items, rows) if row["score"] is not None]
    human, scores = [item["human"] for item, _ in pairs], [score for _, score in pairs]
    by_model = {}
    for item, score in pairs:
        by_model.setdefault(item["model"], ([], []))
        by_model[item["model"]][0].append(item["human"])
        by_model[item["model"]][1].append(score)
    means = {m: (sum(h) / len(h), sum(j) / len(j)) for m, (h, j) in sorted(by_model.items())}
    result = {"n": len(pairs), "n_failed": len(items) - len(pairs), "spearman": spearman(human, scores),
              "qwk": quadratic_weighted_kappa([min(5, max(1, round(h))) for h in human],
                                              [min(5, max(1, round(j))) for j in scores]),
              "model_means": {m: {"human": round(h, 4), "judge": round(j, 4)} for m, (h, j) in means.items()},
              "model_mean_spearman": spearman([h for h, _ in means.values()], [j for _, j in means.values()]),
              "model_mean_pearson": pearson([h for h, _ in means.values()], [j for _, j in means.values()]),
              **judged}
    out = Path(out_dir)
    write_jsonl(out / "agree_items.jsonl", ({"model": item["model"], "task_id": item["task_id"],
                                             "human_score": item["human"], "judge_score": row["score"],
                                             "flags": row["flags"]} for item, row in zip(items, rows)))
    write_json(out / "agree.json", result)
    return result


def agreement_table(result: dict) -> str:
    """The per-model means side by side, human (reference) first, best first."""
    lines = [f"{'model':<40} {'rated':>6} {'judge':>6}"]
    for model, m in sorted(result["model_means"].items(), key=lambda item: -item[1]["human"]):
        lines.append(f"{model or '(no model)':<40} {m['human']:>6.2f} {m['judge']:>6.2f}")
    show = lambda v: "not measured" if v is None else f"{v:.3f}"
    lines.append(f"{result['n']} answers judged, {result['n_failed']} failed; Spearman per answer "
                 f"{show(result['spearman'])}, quadratic-weighted kappa {show(result['qwk'])}; per-model "
                 f"means: rank correlation {show(result['model_mean_spearman'])}, "
                 f"Pearson {show(result['model_mean_pearson'])}")
    return "\n".join(lines)
