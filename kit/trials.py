"""The trial table: one row per run under a results folder, rebuilt from each run's metrics.json.

    python -m kit.trials results/demo/runs      # rewrites trials.csv, TRIALS.md, trials.png there
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kit.io import KitError, atomic_open, run_main

COLUMNS = ("run", "inference", "status", "score", "ci95", "lora_r", "lora_alpha", "learning_rate",
           "num_train_epochs", "max_steps", "epochs_run", "train_examples", "final_train_loss",
           "best_eval_loss", "runtime_s", "train_tokens_per_s", "judge", "prompt_hash", "error")


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def score_files(run_dir: Path) -> list[tuple[str, Path]]:
    """(inference settings, score.json) of a run: results/<run>/score.json from `infer.py --judge`,
    and results/<run>/infer/<settings>/score.json from a scored sweep's inference variants."""
    found = [("", run_dir / "score.json")] if (run_dir / "score.json").exists() else []
    found += [(p.parent.name, p) for p in sorted(run_dir.glob("infer/*/score.json"))]
    return found


def collect_rows(results_dir: Path) -> list[dict]:
    """One row per scored inference of each finished run (one row if none is scored), failed runs
    too; best score first, then lowest eval loss."""
    rows = []
    for run_dir in sorted(p for p in Path(results_dir).iterdir() if p.is_dir()):
        metrics_file, failed_file = run_dir / "metrics.json", run_dir / "failed.json"
        if metrics_file.exists():
            metrics = _read(metrics_file)
            base = {key: metrics.get(key) for key in COLUMNS}
            base.update(run=run_dir.name, status="ok", inference="", score=None, error=None)
            scored = score_files(run_dir)
            for inference, path in scored or [("", None)]:
                row = dict(base, inference=inference)
                if path is not None:
                    score = _read(path)
                    row.update(score=score.get("score"), ci95=score.get("ci95"),
                               judge=f"{score.get('judge_backend')}:{score.get('judge_model')}",
                               prompt_hash=score.get("prompt_hash"))
                rows.append(row)
            inference_failures = [(p.parent.name if p.parent != run_dir else "", p)
                                  for p in [failed_file, *sorted(run_dir.glob("infer/*/failed.json"))]
                                  if p.exists()]
            for inference, path in inference_failures:  # trained, but answering or judging failed
                rows.append(dict(base, inference=inference, status="failed", error=_read(path).get("error")))
        elif failed_file.exists():
            failed = _read(failed_file)
            row = {key: None for key in COLUMNS}
            row.update(run=run_dir.name, inference=failed.get("inference", ""), status="failed",
                       error=failed.get("error"))
            rows.append(row)
    return sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0),
                                       r["best_eval_loss"] is None, r["best_eval_loss"] or 0))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "-".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|")


def update_trials_table(results_dir) -> str:
    """Rewrite trials.csv, TRIALS.md and trials.png atomically; return the Markdown table."""
    results_dir = Path(results_dir)
    rows = collect_rows(results_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_open(results_dir / "trials.csv") as handle:
        handle.write(buffer.getvalue())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    with atomic_open(results_dir / "TRIALS.md") as handle:
        handle.write("# Trials\n\nRebuilt after every run from results/*/metrics.json and the judge's "
                     "score.json files; best score first. ci95: bootstrap interval over tasks.\n\n")
        handle.write(table)
    plot_trials(rows, results_dir / "trials.png")
    return table


def plot_trials(rows: list[dict], path: Path) -> None:
    """Judge scores with their 95% intervals when runs are scored, else eval (or train) loss:
    one point per trial, labelled with its value; the axis spans the data, not from zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "ok"]
    scored = [r for r in done if r["score"] is not None]
    if scored:
        shown, ylabel = scored, "judge score (1-5), 95% interval"
        values = [r["score"] for r in shown]
        errors = [[v - (r["ci95"] or [v, v])[0] for v, r in zip(values, shown)],
                  [(r["ci95"] or [v, v])[1] - v for v, r in zip(values, shown)]]
    else:
        shown = [r for r in done if (r["best_eval_loss"] or r["final_train_loss"]) is not None]
        ylabel = "best eval loss (else final train loss)"
        values = [r["best_eval_loss"] if r["best_eval_loss"] is not None else r["final_train_loss"]
                  for r in shown]
        errors = None
    names = [r["run"] + (f"\n{r['inference']}" if r["inference"] else "") for r in shown]
    figure, axis = plt.subplots(figsize=(max(4.5, 1.2 + 0.9 * len(shown)), 4))
    if shown:
        axis.errorbar(range(len(shown)), values, yerr=errors, fmt="o", capsize=4)
        for x, value in enumerate(values):
            axis.annotate(f"{value:.3g}", (x, value), textcoords="offset points", xytext=(6, 4), fontsize=8)
        axis.set_xlim(-0.6, len(shown) - 0.4)
    axis.set_xticks(range(len(shown)), names, rotation=30, ha="right", fontsize=7)
    axis.set_ylabel(ylabel)
    axis.set_title("trials, best first" if scored else "trials (no judge scores yet)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def main(argv=None) -> str:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kit.trials",
                                     description="rebuild trials.csv, TRIALS.md and trials.png")
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise KitError(f"{args.results_dir}: no such results folder")
    table = update_trials_table(args.results_dir)
    print(table, end="")
    return table


if __name__ == "__main__":
    run_main(main)
