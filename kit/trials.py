"""The trial table: one row per run under a results folder, rebuilt from each run's metrics.json.

    python -m kit.trials results/demo/runs      # rewrites trials.csv, TRIALS.md, trials.png there
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from kit.io import KitError, atomic_open, run_main
from kit.runs import ResultsDir, RunDir, read_json
from kit.settings import opt, parse_settings

COLUMNS = ("run", "inference", "status", "score", "ci95", "vs_best", "lora_r", "lora_alpha", "learning_rate",
           "num_train_epochs", "max_steps", "epochs_run", "train_examples", "final_train_loss",
           "best_eval_loss", "runtime_s", "train_tokens_per_s", "judge", "prompt_hash", "error")


def run_rows(run: RunDir) -> list[dict]:
    """One row per scored inference of a finished run (one row if none is scored), plus one per
    failed inference; a run that failed to train is one failed row."""
    metrics = run.read_metrics()
    if not metrics and run.metrics.exists():  # written by hand, or cut short: say so, never skip it
        return [dict(dict.fromkeys(COLUMNS), run=run.name, inference="", status="failed",
                     error=f"{run.metrics.name} is not readable JSON")]
    if not metrics:
        failed = read_json(run.failed)
        if not failed:
            return []
        return [dict(dict.fromkeys(COLUMNS), run=run.name, inference=failed.get("inference", ""),
                     status="failed", error=failed.get("error"))]
    base = {key: metrics.get(key) for key in COLUMNS}
    base.update(run=run.name, status="ok", inference="", score=None, error=None)
    rows = []
    for setting, answers in run.answer_dirs():
        score = read_json(answers.score)
        if score:
            rows.append(dict(base, inference=setting, score=score.get("score"), ci95=score.get("ci95"),
                             judge=f"{score.get('judge_backend')}:{score.get('judge_model')}",
                             prompt_hash=score.get("prompt_hash"), scores_file=answers.scores,
                             judged_by=judge_identity(score)))
    rows = rows or [base]
    for setting, answers in run.answer_dirs():  # trained, but answering or judging failed
        failed = read_json(answers.failed)
        if failed:
            rows.append(dict(base, inference=setting, status="failed", error=failed.get("error")))
    return rows


def judge_identity(score: dict) -> tuple:
    """What must match for two scores to be compared (kit.judging: compare refuses otherwise)."""
    from kit.judging.stats import COMPARED_SETTINGS

    return tuple(score.get(key) for key in COMPARED_SETTINGS)


def mark_ties(rows: list[dict]) -> None:
    """vs_best for every scored row: best, tied (not distinguishable from the best after Holm's
    correction over every pair) or worse; only rows judged the same way are compared."""
    from kit.judging.scoring import read_scores
    from kit.judging.stats import ties_with_best

    groups = {}
    for index, row in enumerate(rows):
        if row.get("scores_file") is not None and row["score"] is not None and row["scores_file"].is_file():
            groups.setdefault(row["judged_by"], {})[index] = read_scores(row["scores_file"])
    for group in groups.values():
        for index, verdict in ties_with_best(group).items():
            rows[index]["vs_best"] = verdict


def collect_rows(results_dir: Path) -> list[dict]:
    """Every run's rows, trials marked against the best; best score first, then lowest eval loss."""
    rows = [row for run in ResultsDir(results_dir).runs() for row in run_rows(run)]
    mark_ties(rows)
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
    results = ResultsDir(results_dir)
    rows = collect_rows(results.path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_open(results.trials_csv) as handle:
        handle.write(buffer.getvalue())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    with atomic_open(results.trials_md) as handle:
        handle.write("# Trials\n\nRebuilt after every run from results/*/metrics.json and the judge's "
                     "score.json files; best score first. ci95: bootstrap interval over tasks. vs_best: "
                     "`tied` trials are not distinguishable from the best (paired tests over the common "
                     "tasks, Holm-corrected over every pair of trials judged the same way); pick among "
                     "them on other grounds, not on the score's last digits.\n\n")
        handle.write(table)
    plot_trials(rows, results.trials_png)
    return table


def plotted(rows: list[dict]) -> tuple[list[dict], list[float], str, bool]:
    """(rows shown best first, their values, the axis label, scored?): judge scores when runs are
    scored, else eval (or train) loss, lower first."""
    done = [r for r in rows if r["status"] == "ok"]
    scored = [r for r in done if r["score"] is not None]
    if scored:
        return scored, [r["score"] for r in scored], "judge score 1-5, higher is better", True
    loss = lambda r: r["best_eval_loss"] if r["best_eval_loss"] is not None else r["final_train_loss"]
    shown = sorted((r for r in done if loss(r) is not None), key=loss)
    return shown, [loss(r) for r in shown], "eval (else train) loss, lower is better", False


def plot_trials(rows: list[dict], path: Path) -> None:
    """One point per trial, best first, labelled with its value. Scores sit on the whole 1-5 scale
    with their intervals, tied and worse trials marked; losses on an axis from 0, with their spread
    written out, so a difference in the third decimal does not fill the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kit.training import no_data

    shown, values, ylabel, scored = plotted(rows)
    figure, axis = plt.subplots(figsize=(max(5.5, 1.6 + 0.9 * len(shown)), 4.2))
    if not shown:
        no_data(axis, "no finished runs with a score or a logged loss")
    elif scored:
        errors = [[v - (r["ci95"] or [v, v])[0] for v, r in zip(values, shown)],
                  [(r["ci95"] or [v, v])[1] - v for v, r in zip(values, shown)]]
        for verdict, style in (("best", dict(fmt="*", markersize=12, color="C1")), ("tied", dict(fmt="o", color="C0")),
                               ("worse", dict(fmt="o", color="0.6", mfc="white")), (None, dict(fmt="o", color="0.3"))):
            picked = [x for x, r in enumerate(shown) if r.get("vs_best") == verdict]
            if picked:
                label = {"best": "best", "tied": "tied with the best (Holm, 5%)", "worse": "worse than the best",
                         None: "not compared"}[verdict]
                axis.errorbar(picked, [values[x] for x in picked], capsize=4, label=label,
                              yerr=[[errors[0][x] for x in picked], [errors[1][x] for x in picked]], **style)
        axis.set_ylim(1, 5)
        axis.legend(fontsize=7)
    else:
        axis.plot(range(len(shown)), values, "o")
        axis.set_ylim(0, max(values) * 1.1)
        spread = max(values) - min(values)
        axis.text(0.02, 0.04, f"spread {spread:.4g} ({spread / max(values):.2%})", transform=axis.transAxes,
                  fontsize=8)
    for x, value in enumerate(values):
        axis.annotate(f"{value:.3g}", (x, value), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if shown:
        axis.set_xlim(-0.6, len(shown) - 0.4)
        axis.set_xticks(range(len(shown)), [r["run"] + (f"\n{r['inference']}" if r["inference"] else "")
                                            for r in shown], rotation=30, ha="right", fontsize=7)
    axis.set_ylabel(ylabel)
    axis.set_title("trials, best first; bars: 95% interval" if scored else "trials, best first (no judge scores yet)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def short_table(rows: list[dict]) -> str:
    """run, status, score ± interval, loss: what a terminal needs; TRIALS.md has every column."""
    show = lambda v: "-" if v is None else f"{v:.4g}"
    names = [r["run"] + (f" [{r['inference']}]" if r["inference"] else "") for r in rows]
    width = max([len("run"), *map(len, names)]) + 2
    lines = [f"{'run':<{width}}{'status':<8}{'score (95% interval)':<23}{'vs best':<9}loss"]
    for name, r in zip(names, rows):
        ci = r["ci95"]
        score = "-" if r["score"] is None else f"{r['score']:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
        loss = r["best_eval_loss"] if r["best_eval_loss"] is not None else r["final_train_loss"]
        lines.append(f"{name:<{width}}{r['status']:<8}{score:<23}{r.get('vs_best') or '-':<9}{show(loss)}")
    return "\n".join(lines)


@dataclass
class TrialsSettings:
    """where the runs are"""
    results_dir: str = opt("results", "a results folder (results/<run>/ inside)", positional=True)

    def check(self) -> None:
        if not Path(self.results_dir).is_dir():
            raise KitError(f"{self.results_dir}: no such results folder")


def main(argv=None) -> str:
    settings, _ = parse_settings(TrialsSettings, argv, prog="-m kit.trials", doc=__doc__)
    table = update_trials_table(settings.results_dir)
    rows = collect_rows(Path(settings.results_dir))
    results = ResultsDir(settings.results_dir)
    if not rows:
        print(f"no runs in {settings.results_dir} (a run is a folder with metrics.json or failed.json)")
    else:
        print(short_table(rows))
    print(f"every column: {results.trials_md}, {results.trials_csv}; picture: {results.trials_png}")
    return table


if __name__ == "__main__":
    run_main(main)
