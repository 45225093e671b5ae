"""The trial table: one row per run under a results folder, rebuilt from each run's metrics.json.

    python -m kit.trials results/demo/runs      # rewrites trials.csv, TRIALS.md, trials.png there
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kit.io import KitError, atomic_open, run_main

COLUMNS = ("run", "status", "lora_r", "lora_alpha", "learning_rate", "num_train_epochs", "max_steps",
           "train_examples", "final_train_loss", "best_eval_loss", "runtime_s", "train_tokens_per_s",
           "score", "error")


def collect_rows(results_dir: Path) -> list[dict]:
    rows = []
    for run_dir in sorted(p for p in Path(results_dir).iterdir() if p.is_dir()):
        metrics_file, failed_file = run_dir / "metrics.json", run_dir / "failed.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            row = {key: metrics.get(key) for key in COLUMNS}
            row.update(run=run_dir.name, status="ok")
            score_file = run_dir / "score.json"  # written by a judge, when one has scored the run
            if score_file.exists():
                row["score"] = json.loads(score_file.read_text(encoding="utf-8")).get("score")
        elif failed_file.exists():
            failed = json.loads(failed_file.read_text(encoding="utf-8"))
            row = {key: None for key in COLUMNS}
            row.update(run=run_dir.name, status="failed", error=failed.get("error"))
        else:
            continue
        rows.append(row)
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
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
        handle.write("# Trials\n\nRebuilt by train.py after every run from results/*/metrics.json.\n\n")
        handle.write(table)
    plot_trials(rows, results_dir / "trials.png")
    return table


def plot_trials(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "ok"]
    figure, axis = plt.subplots(figsize=(max(4, 1 + 0.8 * len(done)), 4))
    names = [r["run"] for r in done]
    values = [r["best_eval_loss"] if r["best_eval_loss"] is not None else r["final_train_loss"]
              for r in done]
    axis.bar(range(len(done)), [v if v is not None else 0 for v in values])
    axis.set_xticks(range(len(done)), names, rotation=30, ha="right", fontsize=7)
    axis.set_ylabel("best eval loss (else final train loss)")
    axis.set_title("trials by r / alpha")
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
