"""Nothing lost, nothing cryptic: what a new user tries. Inputs are never overwritten, bad values
and bad files are one line before any model loads, kills leave nothing stray and resume exactly."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

import filter_data
import infer
import quantize_push
import train
from kit import models as kit_models
from kit.io import KitError, check_output, iter_jsonl, write_jsonl
from kit.tasks import validate_output

TASKS = str(ROOT / "data" / "sample_tasks.jsonl")
REFERENCE = str(ROOT / "data" / "sample_reference_qa.jsonl")
MAGPIE = str(ROOT / "data" / "sample_magpie.jsonl")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
       "PYTHONUNBUFFERED": "1"}


def no_model_loads(monkeypatch):
    monkeypatch.setattr(kit_models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))


def script(name, *args, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, **kwargs)


def one_line_error(done, text):
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and text in done.stderr, done.stderr[-2000:]


# ---- 1. never destroy the user's data ------------------------------------------------------

def test_quantize_output_over_an_input_is_refused(tiny_gemma2, tmp_path, monkeypatch):
    no_model_loads(monkeypatch)
    model = tmp_path / "models" / "base"
    shutil.copytree(tiny_gemma2, model)
    before = sorted(p.name for p in model.iterdir())
    for output, relation in ((model, "is"), (model.parent, "contains"), (model / "q", "lies inside")):
        with pytest.raises(KitError, match=f"{relation} --model"):
            quantize_push.main(["--model", str(model), "--output", str(output), "--overwrite"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(KitError, match="not written by quantize_push.py"):
        quantize_push.main(["--model", str(model), "--output", str(tmp_path / "mine"), "--overwrite"])
    assert sorted(p.name for p in model.iterdir()) == before
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_outputs_over_inputs_are_refused_in_every_script(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    no_model_loads(monkeypatch)
    data = tmp_path / "data.jsonl"
    shutil.copy(MAGPIE, data)
    original = data.read_bytes()
    with pytest.raises(KitError, match="is --input"):
        filter_data.main(["--input", str(data), "--output", str(data)])
    tasks = tmp_path / "tasks.jsonl"
    shutil.copy(TASKS, tasks)
    base = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", str(tasks),
            "--reference", REFERENCE, "--results_dir", str(tmp_path / "r")]
    with pytest.raises(KitError, match="--output .* is --tasks"):
        infer.main(base + ["--output", str(tasks)])
    with pytest.raises(KitError, match="--csv .* is --reference"):
        infer.main(base + ["--output", str(tmp_path / "o.jsonl"), "--csv", REFERENCE])
    run = tmp_path / "runs" / "r8-a16-lr0.005-s2-alpaca_ja"
    run.mkdir(parents=True)
    inside = run / "data.jsonl"
    shutil.copy(REFERENCE, inside)
    with pytest.raises(KitError, match="lies inside the run folder"):
        train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                    str(tiny_gemma2), "--data_files", str(inside), "--results_dir", str(tmp_path / "runs"),
                    "--learning_rate", "5e-3", "--max_steps", "2", "--overwrite"])
    assert data.read_bytes() == original and inside.exists()
    assert tasks.read_bytes() == Path(TASKS).read_bytes()


def test_output_paths_checked_before_work(tmp_path):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(KitError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "out.jsonl", {})
    with pytest.raises(KitError, match="is a folder; give a file name"):
        check_output(tmp_path, {})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere
            with pytest.raises(KitError, match="is not writable"):
                check_output(locked / "out.jsonl", {})
    finally:
        locked.chmod(0o700)
    done = script("filter_data.py", "--input", MAGPIE, "--output", tmp_path / "file" / "out.jsonl")
    one_line_error(done, "is a file, not a folder")


def test_model_folder_without_tokenizer_is_refused(tiny_gemma2, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_gemma2 / name, bare / name)
    for call in (lambda: quantize_push.main(["--model", str(bare), "--output", str(tmp_path / "q")]),
                 lambda: train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"),
                                     "--model_name_or_path", str(bare), "--data_files", REFERENCE,
                                     "--results_dir", str(tmp_path / "runs")]),
                 lambda: infer.main(["--model", str(bare), "--tasks", TASKS,
                                     "--output", str(tmp_path / "o.jsonl")])):
        with pytest.raises(KitError, match="no tokenizer files"):
            call()


def test_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_jsonl(tmp_path / "o.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "o.jsonl").stat().st_mode & 0o777 == 0o644


# ---- 2. reruns and resume never keep or report wrong results -------------------------------

def test_resume_regenerates_an_answer_whose_input_changed(tiny_gemma2, tiny_adapter, tmp_path):
    out = tmp_path / "output.jsonl"
    args = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", TASKS, "--k", "0",
            "--max_new_tokens", "8", "--output", str(out), "--results_dir", str(tmp_path / "r")]
    infer.main(args)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rows[2]["input"], rows[2]["output"] = "前の版の質問", "古い答え"  # an answer for an older task file
    write_jsonl(out, rows)
    metrics = infer.main(args + ["--resume"])
    assert metrics["generated"] == 1
    assert validate_output(TASKS, out) == []
    assert "古い答え" not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("flag,value,message", [
    ("--limit", "-1", "--limit must be at least 1"), ("--batch_size", "0", "--batch_size must be"),
    ("--max_new_tokens", "0", "--max_new_tokens must be"), ("--k", "-1", "--k must be at least 0"),
    ("--repetition_penalty", "0", "--repetition_penalty must be > 0"),
    ("--ban", "", "take non-empty strings"), ("--stop", "", "take non-empty strings"),
])
def test_infer_rejects_values_that_make_no_sense(tiny_gemma2, tmp_path, monkeypatch, flag, value, message):
    no_model_loads(monkeypatch)
    with pytest.raises(KitError, match=message):
        infer.main(["--model", str(tiny_gemma2), "--tasks", TASKS, "--output", str(tmp_path / "o.jsonl"),
                    flag, value])


@pytest.mark.parametrize("flag,value,message", [
    ("--learning_rate", "-1e-4", "learning_rate must be > 0"), ("--val_size", "-1", "val_size must be"),
    ("--per_device_train_batch_size", "0", "per_device_train_batch_size must be at least 1"),
    ("--resume_from_checkpoint", "/no/such/checkpoint", "no such checkpoint folder"),
])
def test_train_rejects_values_before_loading(tiny_gemma2, tmp_path, monkeypatch, flag, value, message):
    no_model_loads(monkeypatch)
    with pytest.raises(KitError, match=message):
        train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                    str(tiny_gemma2), "--data_files", REFERENCE, "--results_dir", str(tmp_path), flag, value])


def test_filter_rejects_nan_percent(tmp_path):
    with pytest.raises(KitError, match="min_language_percent must be a number from 0 to 100"):
        filter_data.main(["--input", MAGPIE, "--output", str(tmp_path / "o.jsonl"),
                          "--min_language_percent", "nan"])


def test_validator_rejects_nan_and_infinity(tmp_path):
    out = tmp_path / "output.jsonl"
    lines = []
    for line in Path(TASKS).read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        lines.append(json.dumps({"task_id": task["task_id"], "input": task["input"], "output": "答え"},
                                ensure_ascii=False))
    lines[1] = lines[1][:-1] + ', "score": NaN}'
    lines[2] = lines[2][:-1] + ', "score": Infinity}'
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = validate_output(TASKS, out)
    assert any(":2: not valid JSON (NaN" in p for p in problems)
    assert any(":3: not valid JSON (Infinity" in p for p in problems)


# ---- 3. one-line errors, never a library traceback -----------------------------------------

def test_bad_files_are_one_line_errors(tmp_path, tiny_gemma2):
    latin = tmp_path / "config.yaml"
    latin.write_bytes("learning_rate: 1e-4  # caf\xe9\n".encode("latin-1"))
    one_line_error(script("train.py", "--config", latin), "not UTF-8")
    one_line_error(script("train.py", "--data_files", REFERENCE, "--config"), "--config takes a YAML file")
    broken_json = tmp_path / "data.json"
    broken_json.write_bytes(b'[{"instruction": "\xff"}]')
    one_line_error(script("filter_data.py", "--input", broken_json, "--output", tmp_path / "o.jsonl"),
                   "not UTF-8")
    parquet = tmp_path / "data.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet PAR1")
    one_line_error(script("filter_data.py", "--input", parquet, "--output", tmp_path / "o.jsonl"),
                   "not a readable parquet file")
    array = tmp_path / "array.jsonl"
    array.write_text(json.dumps([{"instruction": "q", "response": "a"}]), encoding="utf-8")
    with pytest.raises(KitError, match="a JSON array, not JSONL"):
        list(iter_jsonl(array))
    done = subprocess.run([sys.executable, "-m", "rag", "--reference", REFERENCE, "--query", "カレー",
                           "--k", "-2"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    one_line_error(done, "--k must be at least 1")


def test_adapter_for_another_base_is_one_line(tiny_gemma2, tiny_adapter, tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    other = tmp_path / "other"
    shutil.copytree(tiny_gemma2, other)
    config = Gemma2Config.from_pretrained(other)
    config.hidden_size, config.head_dim = 32, 8
    Gemma2ForCausalLM(config).save_pretrained(other)
    with pytest.raises(KitError, match="does not fit .* trained on"):
        infer.main(["--model", str(other), "--adapter", str(tiny_adapter), "--tasks", TASKS,
                    "--output", str(tmp_path / "o.jsonl"), "--results_dir", str(tmp_path / "r")])


def test_truncated_colbert_cache_is_encoded_again(tiny_colbert, tmp_path):
    from rag import load_references, make_retriever

    documents = [r["input"] for r in load_references(REFERENCE)]
    first = make_retriever("colbert", str(tiny_colbert), tmp_path)
    first.index(documents)
    cache = next(tmp_path.glob("colbert-*.pt"))
    cache.write_bytes(cache.read_bytes()[:100])  # a run killed mid-write (before atomic writes)
    again = make_retriever("colbert", str(tiny_colbert), tmp_path)
    again.index(documents)
    assert not again.from_cache and again.search("カレーの作り方", 3) == first.search("カレーの作り方", 3)
    third = make_retriever("colbert", str(tiny_colbert), tmp_path)
    third.index(documents)
    assert third.from_cache  # the cache was rewritten whole
    assert not list(tmp_path.glob(".*.partial"))


def test_closed_pipe_is_silent():
    done = subprocess.run(f"{sys.executable} -m rag --reference {REFERENCE} --query カレー --k 20 | head -1",
                          shell=True, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.stdout.count("\n") == 1 and "Traceback" not in done.stderr and "Broken" not in done.stderr


def test_ctrl_c_during_inference_is_one_line_with_the_resume_command(tiny_gemma2, tiny_adapter, tmp_path):
    out = tmp_path / "o.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "infer.py"), "--model", str(tiny_gemma2), "--adapter", str(tiny_adapter),
         "--tasks", TASKS, "--k", "0", "--max_new_tokens", "400", "--batch_size", "1", "--output", str(out),
         "--results_dir", str(tmp_path / "r")], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "o.progress.jsonl").exists(), process)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "interrupted; finished work is saved. Resume with: python" in stderr and "--resume" in stderr


# ---- 4. quiet, accurate, quick -------------------------------------------------------------

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "unsloth")


@pytest.mark.parametrize("name", ["train.py", "infer.py", "judge.py", "quantize_push.py", "filter_data.py"])
def test_help_imports_nothing_heavy_and_shows_the_examples(name):
    """--help is instant because it imports no ML library (asserted on sys.modules, not a clock)."""
    code = (f"import runpy, sys; sys.argv = [{name!r}, '--help']\n"
            f"try:\n    runpy.run_path({str(ROOT / name)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("HEAVY []"), done.stdout[-500:]
    assert f"python {name}" in done.stdout and "(default: " in done.stdout  # examples and defaults
    if name == "train.py":
        assert done.stdout.index("--model_name_or_path") < done.stdout.index("--learning_rate")
        assert len(done.stdout.splitlines()) < 80


def test_unknown_and_abbreviated_flags_are_errors(tiny_gemma2, tmp_path, monkeypatch):
    no_model_loads(monkeypatch)
    base = ["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
            "--data_files", REFERENCE, "--results_dir", str(tmp_path)]
    with pytest.raises(KitError, match="--learning_rat \\(did you mean --learning_rate"):
        train.main(base + ["--learning_rat", "1e-4"])


def test_filter_warns_when_a_pass_drops_most_records_and_offers_a_relative_count(tmp_path, capsys):
    report = filter_data.main(["--input", MAGPIE, "--output", str(tmp_path / "a.jsonl")])
    assert any("rare_char" in w and "over half" in w for w in report["warnings"])
    assert "per_million" in capsys.readouterr().err
    relative = filter_data.main(["--input", MAGPIE, "--output", str(tmp_path / "b.jsonl"),
                                 "--rare_char_per_million", "50", "--second_pass_rare_char_per_million", "20"])
    assert relative["records_out"] > report["records_out"]
    assert not any("rare_char" in w for w in relative["warnings"])


def parse_readme_command(script_name, argv):
    """The command's flags through its script's settings, without checking its files (a
    --config that only a user has, such as results/<run>/config.yaml, is left out)."""
    if "--config" in argv and not (ROOT / argv[argv.index("--config") + 1]).exists():
        at = argv.index("--config")
        argv = argv[:at] + argv[at + 2:]
    import judge
    from kit.settings import parse_settings
    from kit.stage_settings import FilterSettings, InferSettings, QuantizeSettings
    from kit.training import parse_train

    if script_name == "train.py":
        _, info = parse_train(argv, check=False)
        return info.extra_argv  # SFTConfig's own flags are parsed by trl at run time
    classes = {"infer.py": InferSettings, "quantize_push.py": QuantizeSettings, "filter_data.py": FilterSettings,
               "judge.py": (judge.AnswersInputs, judge.JudgeSettings)}[script_name]
    also_known = (judge.JudgeSettings,) if script_name == "infer.py" else ()  # as infer.main reads it
    return parse_settings(classes, argv, prog=script_name, doc="", check=False, also_known=also_known)


def test_every_readme_command_parses(tmp_path):
    """Each `python <script>` line in the README, parsed by its script's own parser."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands, current = [], ""
    for line in text.splitlines():
        line = line.strip()
        if current:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith(("python ", "accelerate launch ")):
            current = line.rstrip("\\").strip()
        if current and not line.endswith("\\"):
            commands.append(current.split("  #")[0])
            current = ""
    checked = 0
    for command in commands:
        words = shlex.split(command)
        if "..." in words:
            continue  # an abbreviation in the prose, not a command to copy
        script_name = next((w for w in words if w.endswith(".py")), None)
        if script_name not in ("infer.py", "judge.py", "quantize_push.py", "filter_data.py", "train.py"):
            continue
        argv = words[words.index(script_name) + 1:]
        if argv[:1] in (["validate"], ["compare"], ["agree"], ["flags"]):
            continue  # subcommands parse inside main; their flags are plain
        parse_readme_command(script_name, argv)
        checked += 1
    assert checked >= 8, commands


# ---- kills at every stage ------------------------------------------------------------------

def wait_for(condition, process, timeout=180):
    start = time.time()
    while not condition():
        assert process.poll() is None, "finished before it could be killed"
        assert time.time() - start < timeout
        time.sleep(0.01)


def stray(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial" in p.name)


def test_a_kill_at_every_stage_loses_nothing(tiny_gemma2, tiny_adapter, tmp_path):
    # filter: a kill mid-write leaves at most the .partial file; the next run replaces it
    out = tmp_path / "filtered.jsonl"
    filter_args = ["--input", MAGPIE, "--output", str(out), "--rare_char_max_count", "-1",
                   "--second_pass_rare_char_max_count", "-1"]
    filter_data.main(filter_args)
    expected = out.read_bytes()
    out.unlink()
    (tmp_path / ".filtered.jsonl.partial").write_text('{"instruction": "途中', encoding="utf-8")
    filter_data.main(filter_args)
    assert out.read_bytes() == expected and stray(tmp_path) == []
    # train: killed after its first checkpoint; the rerun refuses, --resume_from_checkpoint ends
    # where an uninterrupted run ends
    common = ["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
              "--data_files", REFERENCE, "--report_to", "none", "--max_steps", "40", "--save_steps", "4",
              "--save_total_limit", "2", "--logging_steps", "4"]
    straight = train.main(common + ["--results_dir", str(tmp_path / "a")])
    runs = tmp_path / "b"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *common, "--results_dir", str(runs)],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = runs / straight["run"]
    wait_for(lambda: (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists(), process)
    process.kill()
    process.wait()
    with pytest.raises(KitError, match="unfinished run .*--resume_from_checkpoint true"):
        train.main(common + ["--results_dir", str(runs)])
    resumed = train.main(common + ["--results_dir", str(runs), "--resume_from_checkpoint", "true"])
    assert resumed["final_train_loss"] == pytest.approx(straight["final_train_loss"], rel=1e-4)
    assert resumed["session_tokens"] < resumed["train_tokens"] and resumed["resumed_from_step"] >= 4
    # the whole run's mean loss, not only the resumed process's steps
    assert resumed["mean_train_loss"] == pytest.approx(straight["mean_train_loss"], rel=1e-3)
    with pytest.raises(KitError, match="finished run"):
        train.main(common + ["--results_dir", str(runs), "--resume_from_checkpoint", "true"])
    # infer: killed mid-run (batches of 1); --resume gives the uninterrupted file
    infer_args = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", TASKS, "--k", "0",
                  "--max_new_tokens", "48", "--batch_size", "1", "--results_dir", str(tmp_path / "r")]
    whole = tmp_path / "whole.jsonl"
    infer.main(infer_args + ["--output", str(whole)])
    out = tmp_path / "output.jsonl"
    process = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), *infer_args, "--output", str(out)],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "output.progress.jsonl"
    wait_for(lambda: progress.exists() and progress.read_text(encoding="utf-8").count("\n") >= 2, process)
    process.kill()
    process.wait()
    infer.main(infer_args + ["--output", str(out), "--resume"])
    assert out.read_bytes() == whole.read_bytes() and stray(tmp_path) == []
    # quantize: killed during the merge; the base and adapter are intact, the rerun clears the rest
    adapter_files = {p.name: p.read_bytes() for p in tiny_adapter.iterdir() if p.is_file()}
    target = tmp_path / "models" / "merged"
    process = subprocess.Popen([sys.executable, str(ROOT / "quantize_push.py"), "--model", str(tiny_gemma2),
                                "--adapter", str(tiny_adapter), "--output", str(target)],
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # mid-merge, or just after it while the 4-bit model is verified: either way mid-work
    wait_for(lambda: (tmp_path / "models" / ".merged.partial-merge").exists()
             or (tmp_path / "models" / ".merged.partial").exists(), process)
    process.kill()
    process.wait()
    quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--output", str(target)])
    assert (target / "quantize_report.json").exists() and stray(tmp_path / "models") == []
    assert {p.name: p.read_bytes() for p in tiny_adapter.iterdir() if p.is_file()} == adapter_files
    assert (tiny_gemma2 / "config.json").exists() and (tiny_gemma2 / "tokenizer.json").exists()


# ---- issue 19: a run never destroys a finished result; stale answers are never kept ----------

def test_limit_and_a_killed_rerun_leave_a_finished_output_whole(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    from kit.generation import hf

    out = tmp_path / "output.jsonl"
    args = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", TASKS, "--k", "0",
            "--max_new_tokens", "6", "--batch_size", "2", "--output", str(out), "--results_dir", str(tmp_path / "r")]
    infer.main(args)
    finished = out.read_bytes()
    infer.main(args + ["--limit", "2"])  # a timing run: the other six answers stay
    assert len(out.read_text(encoding="utf-8").splitlines()) == 8 and validate_output(TASKS, out) == []
    real, calls = hf.generate_batch, []

    def killed_after_first_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(hf, "generate_batch", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        infer.main(args)  # a plain rerun, killed after its first batch
    assert out.read_bytes() == finished  # the finished file is untouched until a run completes


def test_resume_redoes_answers_made_with_other_settings(tiny_gemma2, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "output.jsonl"
    args = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", TASKS, "--k", "0",
            "--output", str(out), "--results_dir", str(tmp_path / "r"), "--run_name", "same"]
    infer.main(args + ["--max_new_tokens", "6"])
    again = infer.main(args + ["--max_new_tokens", "6", "--resume"])
    assert again["generated"] == 0
    changed = infer.main(args + ["--max_new_tokens", "9", "--resume"])
    assert changed["generated"] == 8 and "8 earlier answer(s) were made with other settings" in capsys.readouterr().err


def test_run_name_with_a_sweep_names_each_trial(tiny_gemma2, tmp_path):
    outcomes = train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                           str(tiny_gemma2), "--data_files", REFERENCE, "--results_dir", str(tmp_path),
                           "--report_to", "none", "--max_steps", "2", "--run_name", "myrun",
                           "--sweep", "lora_r=4,8"])
    assert [o["run"] for o in outcomes] == ["myrun-lora_r4", "myrun-lora_r8"]
    assert all((tmp_path / name / "metrics.json").exists() for name in ("myrun-lora_r4", "myrun-lora_r8"))


def test_a_second_process_on_a_run_or_an_output_is_refused_and_a_dead_ones_lock_taken_over(
        tiny_gemma2, tmp_path, capsys):
    from kit.io import hold, lock_path

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        out = tmp_path / "output.jsonl"
        lock_path(out).write_text(f"{sleeper.pid} infer.py\n", encoding="utf-8")
        with pytest.raises(KitError, match=f"in use by process {sleeper.pid}"):
            infer.main(["--model", str(tiny_gemma2), "--tasks", TASKS, "--k", "0", "--max_new_tokens", "2",
                        "--output", str(out), "--results_dir", str(tmp_path / "r")])
        run = tmp_path / "runs" / "r8-a16-lr0.005-s2-alpaca_ja"
        run.mkdir(parents=True)
        lock_path(run).write_text(f"{sleeper.pid} train.py\n", encoding="utf-8")
        with pytest.raises(KitError, match=f"in use by process {sleeper.pid}"):
            train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
                        "--data_files", REFERENCE, "--results_dir", str(tmp_path / "runs"), "--report_to", "none",
                        "--learning_rate", "5e-3", "--max_steps", "2"])
        lock_path(out).write_text(f"{gone.pid} infer.py\n", encoding="utf-8")
        with hold(out, "test"):
            assert lock_path(out).read_text().split()[0] == str(os.getpid())
        assert "taking it over" in capsys.readouterr().err and not lock_path(out).exists()
    finally:
        sleeper.kill()


def test_overwrite_clears_the_replaced_runs_scores(tiny_gemma2, tmp_path):
    args = ["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
            "--data_files", REFERENCE, "--results_dir", str(tmp_path), "--report_to", "none", "--max_steps", "2"]
    metrics = train.main(args)
    run = tmp_path / metrics["run"]
    for name in ("score.json", "scores.jsonl", "infer/k0/score.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}", encoding="utf-8")
    train.main(args + ["--overwrite"])
    assert not (run / "score.json").exists() and not (run / "infer").exists() and (run / "metrics.json").exists()


def test_resume_skips_a_half_written_checkpoint(tiny_gemma2, tmp_path, capsys):
    args = ["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
            "--data_files", REFERENCE, "--results_dir", str(tmp_path), "--report_to", "none",
            "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3"]
    metrics = train.main(args)
    run = tmp_path / metrics["run"]
    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    weights = run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # the disk filled while checkpoint-4 was saved
    resumed = train.main(args + ["--resume_from_checkpoint", "true"])
    assert resumed["resumed_from_step"] == 2 and resumed["global_step"] == 6
    assert "checkpoint-4 is incomplete" in capsys.readouterr().err


def test_the_judge_reads_only_the_generations_of_its_own_answers(tiny_gemma2, tiny_adapter, tmp_path):
    import judge

    dev = str(ROOT / "data" / "dev_tasks.jsonl")
    folder = tmp_path / "run"
    args = ["--model", str(tiny_gemma2), "--adapter", str(tiny_adapter), "--tasks", dev, "--k", "0",
            "--max_new_tokens", "2", "--results_dir", str(tmp_path), "--run_name", "run"]
    infer.main(args + ["--output", str(folder / "a.jsonl")])  # every answer cut at 2 tokens
    other = folder / "b.jsonl"
    shutil.copy(folder / "a.jsonl", other)  # the same answers under another name: not infer's
    counts = judge.main(["flags", "--answers", str(other), "--tasks", dev])
    assert "truncated" not in counts
    assert judge.main(["flags", "--answers", str(folder / "a.jsonl"), "--tasks", dev, "--out_dir",
                       str(tmp_path / "f")]).get("truncated", 0) > 0


def test_odd_task_ids_and_pushing_what_the_kit_did_not_write(tmp_path, fake_hub):
    (tmp_path / "t.csv").write_text('task_id,input\n²,a\n--1,b\n3,c\n', encoding="utf-8")
    from kit.tasks import load_tasks

    assert [t["task_id"] for t in load_tasks(tmp_path / "t.csv")] == ["²", "--1", 3]
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(KitError, match="not written and verified by quantize_push.py.*--force_push"):
        quantize_push.main(["--push_only", str(base), "--push_to", "me/x"])
    assert not fake_hub.calls
    quantize_push.main(["--push_only", str(base), "--push_to", "me/x", "--force_push"])
    assert fake_hub.calls[-1][:2] == ("upload_folder", "me/x")


def test_the_same_base_by_another_path_is_the_same_base(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    import json as json_module

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    config = json_module.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = os.path.relpath(tiny_gemma2, ROOT)  # relative, as trained from ROOT
    (adapter / "adapter_config.json").write_text(json_module.dumps(config))
    monkeypatch.chdir(ROOT)
    quantize_push.check_inputs(quantize_push.parse_settings(
        quantize_push.QuantizeSettings, ["--model", str(tiny_gemma2), "--adapter", str(adapter),
                                         "--output", str(tmp_path / "q")], prog="q", doc="")[0])


def _write_many(args):
    from kit.io import write_json as write

    path, n = args
    failures = 0
    for i in range(n):
        try:
            write(path, {"i": i})
        except OSError:
            failures += 1
    return failures


def test_two_writers_on_one_path_never_trip_over_each_others_temporary_file(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_write_many, [(tmp_path / "x.json", 300)] * 2) == [0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("config,message", [
    ("tasks: data/no_such_dev.jsonl\njudge_model: x\n", "tasks data/no_such_dev.jsonl: no such file"),
    ("tasks: data/dev_tasks.jsonl\njudge_modle: x\n", "judge_modle \\(did you mean judge_mode, judge_model"),
    ("judge_model: x\n", "needs `tasks`"),
])
def test_a_sweeps_score_config_is_checked_before_any_trial_trains(tiny_gemma2, tmp_path, config, message):
    (tmp_path / "score.yaml").write_text(config, encoding="utf-8")
    with pytest.raises(KitError, match=message):
        train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(tiny_gemma2),
                    "--data_files", REFERENCE, "--results_dir", str(tmp_path / "runs"), "--sweep", "lora_r=4,8",
                    "k=0,2", "--score", str(tmp_path / "score.yaml")])
    assert not (tmp_path / "runs").exists()


def test_odd_logprobs_and_ratings_are_handled_not_raised(tmp_path):
    import judge
    from kit.judging.backends import _digit_probs, distribution_from_probs

    assert distribution_from_probs(_digit_probs([("5", 1000.0), ("4", float("nan"))]))["expected"] == 5.0
    assert distribution_from_probs(_digit_probs([("3", float("nan"))])) is None  # no grade, not a NaN score
    for bad in (float("nan"), float("inf")):
        write_jsonl(tmp_path / "rated.jsonl", [{"input": "q", "output": "a", "human_score": bad, "reference": "r"}])
        with pytest.raises(KitError, match="rated.jsonl:1: needs a human_score from 1 to 5"):
            judge.main(["agree", "--human", str(tmp_path / "rated.jsonl"), "--judge_model", "x",
                        "--out_dir", str(tmp_path / "a")])
    (tmp_path / "rated.csv").write_bytes("input,output,eval_m_mean,m\n\x82\xa0,x,3,y\n".encode("latin-1"))
    with pytest.raises(KitError, match="rated.csv: not UTF-8"):
        judge.main(["agree", "--human", str(tmp_path / "rated.csv"), "--judge_model", "x", "--out_dir",
                    str(tmp_path / "a")])


def test_broken_adapter_folders_are_named_before_a_model_loads(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    no_model_loads(monkeypatch)
    for name, content, message in (("not-json", "{broken", "not valid JSON"), ("list", "[1, 2]", "not a JSON object"),
                                   ("no-weights", None, "no adapter weights")):
        adapter = tmp_path / name
        shutil.copytree(tiny_adapter, adapter)
        if content is None:
            (adapter / "adapter_model.safetensors").unlink()
        else:
            (adapter / "adapter_config.json").write_text(content, encoding="utf-8")
        with pytest.raises(KitError, match=message):
            infer.main(["--model", str(tiny_gemma2), "--adapter", str(adapter), "--tasks", TASKS,
                        "--output", str(tmp_path / "o.jsonl")])
        with pytest.raises(KitError, match=message):
            quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(adapter),
                                "--output", str(tmp_path / "q")])
