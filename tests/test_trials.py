"""kit.trials: the table rebuilt from run folders, from Python and from its command line."""
import subprocess
import sys

import pytest
from conftest import ROOT

from kit.io import KitError, write_json
from kit.trials import main, update_trials_table


def make_runs(results):
    write_json(results / "r8-a16" / "metrics.json", {"lora_r": 8, "lora_alpha": 16,
                                                     "final_train_loss": 2.5, "best_eval_loss": 2.75})
    write_json(results / "r16-a16" / "metrics.json", {"lora_r": 16, "lora_alpha": 16,
                                                      "final_train_loss": 2.0, "best_eval_loss": 2.25})
    write_json(results / "r64-a64" / "failed.json", {"error": "CUDA out of memory"})
    (results / "r32-a32").mkdir()
    (results / "r32-a32" / "metrics.json").write_text("{cut short", encoding="utf-8")
    (results / "not-a-run").mkdir()


def test_table_lists_finished_and_failed_runs(tmp_path):
    make_runs(tmp_path)
    table = update_trials_table(tmp_path)
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    assert any("r64-a64 |  | failed" in line and "CUDA out of memory" in line for line in lines)
    assert any("r32-a32 |  | failed" in line and "metrics.json is not readable JSON" in line for line in lines)
    assert "| r16-a16 |  | ok |  |  |  | 16 | 16 |" in table
    # unscored runs: lowest eval loss first, failures last
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| r16-a16", "| r8-a16", "| r32-a32", "| r64-a64"]
    csv_lines = (tmp_path / "trials.csv").read_text(encoding="utf-8").splitlines()
    assert csv_lines[0].startswith("run,inference,status,score,ci95,") and len(csv_lines) == 5
    assert (tmp_path / "trials.png").read_bytes()[:4] == b"\x89PNG"


def test_command_line_rebuilds_the_tables(tmp_path):
    make_runs(tmp_path)
    done = subprocess.run([sys.executable, "-m", "kit.trials", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "r8-a16" in done.stdout and (tmp_path / "TRIALS.md").exists()
    with pytest.raises(KitError, match="no such results folder"):
        main([str(tmp_path / "missing")])
