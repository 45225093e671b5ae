"""How well a judge agrees with rated answers (judge.py agree): per item, and on per-model means,
which is what decides between trials."""
from __future__ import annotations

from pathlib import Path

from kit.io import KitError, iter_jsonl
from kit.judging.scoring import judge_items, warn_self_preference
from kit.judging.settings import JudgeSettings
from kit.judging.stats import pearson, quadratic_weighted_kappa, spearman


def read_rated(path: Path, tasks_path: str | None) -> list[dict]:
    """Rated answers: ELYZA's annotated_deshuffled_preds.csv layout (input, output, eval_aspect,
    then per model an answer column <m> beside eval_<m>_mean), or JSONL rows {input, output (the
    rated answer), human_score[, model, reference, eval_aspect]}."""
    if path.suffix.lower() == ".csv":
        return _rated_csv(path)
    from kit.tasks import load_tasks

    references = {t["input"]: t for t in load_tasks(tasks_path)} if tasks_path else {}
    items = []
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
    for line, row in rows:
        for model in models:
            try:
                human = float(row[f"eval_{model}_mean"])
            except (KeyError, TypeError, ValueError):
                raise KitError(f"{path}:{line}: eval_{model}_mean is not a number") from None
            items.append({"input": row["input"], "reference": row["output"],
                          "eval_aspect": row.get("eval_aspect") or "", "answer": row.get(model) or "",
                          "human": human, "model": model})
    return items


def agreement(items: list[dict], settings: JudgeSettings) -> dict:
    """Judge every rated answer; Spearman and QWK per item, per-model means and their Pearson."""
    from prompts import load_judge_prompt

    prompt = load_judge_prompt(settings.judge_prompt)
    for item in items:
        item.update(prompt_hash=prompt.hash, prompt=prompt.render(
            item["input"], item["reference"], item["eval_aspect"], item["answer"],
            "json" if settings.mode == "json" else "digit"))
    warn_self_preference(settings)
    results, _ = judge_items(items, settings)
    pairs = [(item, r.get("expected", r.get("grade"))) for item, r in zip(items, results)]
    pairs = [(item, float(score)) for item, score in pairs if score is not None]
    human, judged = [item["human"] for item, _ in pairs], [score for _, score in pairs]
    by_model = {}
    for item, score in pairs:
        by_model.setdefault(item["model"], ([], []))
        by_model[item["model"]][0].append(item["human"])
        by_model[item["model"]][1].append(score)
    means = {m: (sum(h) / len(h), sum(j) / len(j)) for m, (h, j) in by_model.items()}
    return {"n": len(pairs), "n_failed": len(items) - len(pairs), "spearman": spearman(human, judged),
            "qwk": quadratic_weighted_kappa([min(5, max(1, round(h))) for h in human],
                                            [min(5, max(1, round(j))) for j in judged]),
            "model_means": {m: {"human": round(h, 4), "judge": round(j, 4)} for m, (h, j) in means.items()},
            "model_mean_pearson": pearson([h for h, _ in means.values()], [j for _, j in means.values()]),
            "judge_backend": settings.judge_backend, "judge_model": settings.judge_model,
            "judge_mode": settings.mode, "prompt": prompt.name, "prompt_hash": prompt.hash}
