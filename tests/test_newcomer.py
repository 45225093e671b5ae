"""A newcomer's first hour: results that are not what they seem are called out, mistakes are named,
help shows what exists, and every stage says where its output went and what comes next."""
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from kit.io import KitError, write_json, write_jsonl

TASKS = str(ROOT / "data" / "sample_tasks.jsonl")
REFERENCE = str(ROOT / "data" / "sample_reference_qa.jsonl")
MAGPIE = str(ROOT / "data" / "sample_magpie.jsonl")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
HEAVY = ("torch", "transformers", "trl", "peft")


def run_script(name, *args, merge=False):
    return subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=ROOT, env=ENV, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE)


# ---- results that are not what they seem ---------------------------------------------------

def test_validator_warns_about_answers_of_replacement_characters(tmp_path):
    from kit.tasks import load_tasks

    tasks = load_tasks(TASKS)
    rows = [{"task_id": t["task_id"], "input": t["input"], "output": "\ufffd\ufffd \ufffd" if i < 3 else "答えです。"}
            for i, t in enumerate(tasks)]
    write_jsonl(tmp_path / "output.jsonl", rows)
    done = run_script("infer.py", "validate", "--tasks", TASKS, "--output", tmp_path / "output.jsonl")
    assert done.returncode == 0 and "valid" in done.stdout  # a valid file, but:
    assert "3 answer(s) are mostly U+FFFD" in done.stderr and "tasks 0, 1, 2" in done.stderr


def test_benchmarks_leave_the_committed_figures_alone(tmp_path):
    import importlib.util

    from kit.runs import bench_result

    assert bench_result("x.json").parent == ROOT / "results" / "bench"
    assert bench_result("x.json", committed=True).parent == ROOT / "bench" / "results"
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    committed = {p.name: p.read_bytes() for p in (ROOT / "bench" / "results").iterdir()}
    bench.main(["--sizes", "tiny", "--batches", "1", "--steps", "1", "--new", "4", "--prompt", "16"])
    assert {p.name: p.read_bytes() for p in (ROOT / "bench" / "results").iterdir()} == committed
    assert list((ROOT / "results" / "bench").glob("gpu-*.json"))


def test_the_trial_plot_is_honest_about_losses(tmp_path):
    from kit.trials import collect_rows, plotted, update_trials_table

    write_json(tmp_path / "r-a" / "metrics.json", {"final_train_loss": 7.7268, "lora_r": 8})
    write_json(tmp_path / "r-b" / "metrics.json", {"final_train_loss": 7.7165, "lora_r": 16})
    shown, values, label, scored = plotted(collect_rows(tmp_path))
    assert [r["run"] for r in shown] == ["r-b", "r-a"] and values == [7.7165, 7.7268]  # best first
    assert "lower is better" in label and not scored
    update_trials_table(tmp_path)  # the axis starts at 0 and the spread is written on it (looked at by eye)
    empty = tmp_path / "empty"
    empty.mkdir()
    update_trials_table(empty)
    assert plotted([]) [0] == [] and (empty / "trials.png").read_bytes()[:4] == b"\x89PNG"


def test_a_loss_plot_without_logged_steps_says_no_data_and_warns_nothing(tmp_path):
    import warnings

    from kit.training import plot_losses

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" would fail here
        plot_losses({"run": "r", "train_loss": [], "eval_loss": []}, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


# ---- mistakes named, at once ---------------------------------------------------------------

def test_an_adapter_or_a_run_folder_given_as_the_model_is_named(tiny_gemma2, tiny_adapter, tmp_path):
    import infer

    for model, message in ((tiny_adapter, "is a LoRA adapter, not a model: pass it as --adapter"),
                           (tiny_adapter.parent, "is a training run folder: pass --adapter")):
        with pytest.raises(KitError, match=message):
            infer.main(["--model", str(model), "--tasks", TASKS, "--output", str(tmp_path / "o.jsonl")])


def test_a_folder_given_to_the_filter_is_named(tmp_path):
    done = run_script("filter_data.py", "--input", ROOT / "data", "--output", tmp_path / "o.jsonl")
    assert done.returncode == 2 and "is a folder; give a .jsonl" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("script,args,message", [
    ("infer.py", ["--model", "x/y", "--tasks", "data/sample_taks.jsonl", "--output", "o.jsonl"],
     "data/sample_taks.jsonl: no such file"),
    ("infer.py", ["--model", "./models/nope", "--tasks", TASKS], "--model ./models/nope: no such model directory"),
    ("train.py", ["--data_files", "data/missing.jsonl", "--model_name_or_path", "x/y"],
     "--data_files data/missing.jsonl: no such file"),
    ("train.py", ["--score", "configs/score_dev.yaml"], "--score answers and judges the trials of a sweep"),
])
def test_mistyped_paths_answer_before_any_heavy_import(script, args, message):
    """Asserted on what was imported, not on a clock: no ML library was loaded before the error."""
    code = (f"import sys, runpy; sys.argv = [{script!r}, *{args!r}]\n"
            f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert message in done.stderr, done.stderr[-1500:]
    assert done.stdout.strip().endswith("HEAVY []"), done.stdout


def test_doctor_help_shows_help():
    done = subprocess.run([sys.executable, "-m", "kit.doctor", "--help"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0 and "usage: python -m kit.doctor" in done.stdout and "GiB free" not in done.stdout


# ---- help and README that show what exists -------------------------------------------------

@pytest.mark.parametrize("script,words", [
    ("infer.py", ["python infer.py validate", "--tasks", "(default: 20)", "--resume"]),
    ("judge.py", ["judge.py compare", "judge.py agree", "judge.py flags", "--repeats"]),
    ("quantize_push.py", ["--push_only", "--no_double_quant", "merge a trained LoRA and quantize the result"]),
    ("filter_data.py", ["--rare_char_per_million", "python filter_data.py --input llm-jp/magpie-sft-v1.0"]),
])
def test_help_shows_the_subcommands_examples_and_defaults(script, words):
    done = run_script(script, "--help")
    assert done.returncode == 0 and all(word in done.stdout for word in words), done.stdout


def test_the_readmes_first_filter_command_keeps_records_and_warnings_come_last(tmp_path):
    done = run_script("filter_data.py", "--input", MAGPIE, "--output", tmp_path / "f.jsonl",
                      "--rare_char_per_million", "50", "--second_pass_rare_char_per_million", "20", merge=True)
    assert done.returncode == 0 and "records out                             36" in done.stdout
    absolute = run_script("filter_data.py", "--input", MAGPIE, "--output", tmp_path / "g.jsonl", merge=True)
    assert absolute.stdout.rindex("warning: the rare_char") > absolute.stdout.index("records out")
    assert "next: python train.py" in done.stdout


def test_readme_names_the_flags_the_scripts_have():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--push_to_hub" not in readme.replace("--push_to_hub` uploads", "")
    assert "--push_adapter_to" in readme and "make demo" in readme and "~5 minutes" in readme
    from rag.__main__ import RetrieveSettings

    assert RetrieveSettings().cache_dir == "results/.cache/rag" and "results/.cache/rag" in readme


# ---- outputs where the run is --------------------------------------------------------------

def test_inference_files_go_beside_the_adapters_run(tiny_gemma2, tiny_adapter, tmp_path, capsys):
    import infer

    run = tmp_path / "runs" / "my-run"
    shutil.copytree(tiny_adapter.parent, run, ignore=shutil.ignore_patterns("checkpoints", "infer"))
    args = ["--model", str(tiny_gemma2), "--adapter", str(run / "adapter"), "--tasks", TASKS, "--k", "0",
            "--max_new_tokens", "4", "--limit", "2"]
    infer.main(args)
    infer.main(args + ["--max_new_tokens", "6"])  # another setting: its own folder, nothing overwritten
    folders = sorted((run / "infer").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("sample_tasks-") for f in folders)
    for folder in folders:
        assert {"output.jsonl", "generations.jsonl", "infer_metrics.json"} <= {p.name for p in folder.iterdir()}
    out = capsys.readouterr().out
    assert f"run files: {folders[0]}" in out or f"run files: {folders[1]}" in out
    assert "next: python quantize_push.py" in out


def test_trials_command_prints_a_short_table_and_says_when_there_is_nothing(tmp_path):
    write_json(tmp_path / "r-a" / "metrics.json", {"final_train_loss": 2.5, "best_eval_loss": None})
    done = subprocess.run([sys.executable, "-m", "kit.trials", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True)
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "score", "(95%", "interval)", "vs", "best", "loss"]
    assert lines[1].split() == ["r-a", "ok", "-", "-", "2.5"] and "TRIALS.md" in lines[-1]
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "kit.trials", str(tmp_path / "empty")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert "no runs in" in done.stdout


def test_training_reports_missing_figures_in_words(tiny_gemma2, tmp_path, capsys):
    import train

    train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
                "--data_files", REFERENCE, "--results_dir", str(tmp_path), "--report_to", "none",
                "--max_steps", "2"])
    out = capsys.readouterr().out
    assert "best eval loss not measured" in out and "None" not in out.split("run r8")[-1]
    assert "next: python infer.py --model" in out
