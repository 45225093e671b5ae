"""wandb: offline unless a key or a mode says otherwise (never a login prompt, never a hang), the
run's files beside its metrics, and a judge's score added to the training run it belongs to."""
from __future__ import annotations

import os
import re

from kit.runs import RunDir

PROJECT = "llm2024-kit"


def wandb_reports(report_to: list[str], explicit: bool, run: RunDir) -> list[str]:
    """The trainer's report_to: wandb by default, offline without a key; the environment set."""
    report_to = list(report_to) if explicit else ["wandb"]
    if "wandb" not in report_to:
        return report_to
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_PROJECT", PROJECT)
    os.environ["WANDB_DIR"] = str(run.path)
    if os.environ.get("WANDB_MODE") == "disabled":
        report_to = [r for r in report_to if r != "wandb"]
    return report_to


def log_score(run: RunDir, summary: dict) -> None:
    """Add a judge's score to the training run's wandb run, when it logged to one."""
    # wandb's run folders: [offline-]run-YYYYMMDD_HHMMSS-<id>[-N] (N: a resumed offline run)
    ids = [m.group(1) for p in sorted(run.wandb.glob("*run-*"))
           if (m := re.search(r"run-\d{8}_\d{6}-([a-z0-9]+)", p.name))] if run.wandb.is_dir() else []
    if not ids or os.environ.get("WANDB_MODE") == "disabled":
        return
    import wandb

    online = os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "offline"
    wandb_run = wandb.init(id=ids[0], resume="allow", dir=str(run.path), mode="online" if online else "offline",
                           project=os.environ.get("WANDB_PROJECT", PROJECT))
    ci95 = summary.get("ci95") or [None, None]
    wandb_run.summary.update({"judge/score": summary["score"], "judge/ci95_low": ci95[0],
                              "judge/ci95_high": ci95[1], "judge/prompt_hash": summary["prompt_hash"]})
    wandb_run.finish()
