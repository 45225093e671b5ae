"""infer.py end to end on the tiny Gemma-2 with a LoRA adapter from train.py."""
import json
import shutil
from pathlib import Path

import pytest
from test_tasks import good_output

import infer
from kit import models as kit_models
from kit.io import KitError
from kit.tasks import load_tasks, validate_output

ROOT = infer.Path(infer.__file__).parent
TASKS = str(ROOT / "data" / "sample_tasks.jsonl")
REFERENCE = str(ROOT / "data" / "sample_reference_qa.jsonl")


def infer_args(model, adapter, out, *extra):
    return ["--model", str(model), "--adapter", str(adapter), "--tasks", TASKS, "--reference",
            REFERENCE, "--k", "3", "--max_new_tokens", "24", "--output", str(out),
            "--results_dir", str(out.parent / "results"), *extra]


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("retriever", ["bm25", "colbert"])
def test_end_to_end_output_passes_validator(tiny_gemma2, tiny_adapter, tiny_colbert, tmp_path,
                                            retriever):
    out = tmp_path / "output.jsonl"
    extra = ["--retriever", retriever] + (["--retriever_model", str(tiny_colbert)]
                                          if retriever == "colbert" else [])
    metrics = infer.main(infer_args(tiny_gemma2, tiny_adapter, out, *extra,
                                    "--csv", str(tmp_path / "o.csv")))
    rows = read(out)
    tasks = load_tasks(TASKS)
    assert [r["task_id"] for r in rows] == [t["task_id"] for t in tasks]
    assert [r["input"] for r in rows] == [t["input"] for t in tasks]
    assert all(r["output"].strip() for r in rows)
    assert validate_output(TASKS, out) == []
    assert "\\u" not in out.read_text(encoding="utf-8")  # real Japanese, not escapes
    assert metrics["tokens_per_s"] > 0 and metrics["projected_100_tasks_s"] > 0
    saved = json.loads((tmp_path / "results" / tiny_adapter.parent.name
                                   / "infer_metrics.json").read_text())
    assert saved["mean_task_latency_s"] > 0 and "projection_assumption" in saved
    generations = read(tmp_path / "results" / tiny_adapter.parent.name / "generations.jsonl")
    assert len(generations) == len(tasks) and all(g["batch_mean_latency_s"] > 0 for g in generations)
    assert (tmp_path / "o.csv").read_text(encoding="utf-8").startswith("task_id,input,output")


def test_batched_greedy_equals_sequential(tiny_gemma2, tiny_adapter, tmp_path):
    batched, single = tmp_path / "b.jsonl", tmp_path / "s.jsonl"
    infer.main(infer_args(tiny_gemma2, tiny_adapter, batched, "--batch_size", "8"))
    infer.main(infer_args(tiny_gemma2, tiny_adapter, single, "--batch_size", "1"))
    assert read(batched) == read(single)


def test_resume_after_interruption_gives_the_same_file(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    straight = tmp_path / "straight.jsonl"
    infer.main(infer_args(tiny_gemma2, tiny_adapter, straight, "--batch_size", "3"))
    out = tmp_path / "output.jsonl"
    from kit.generation import hf

    real, calls = hf.generate_batch, []

    def killed_after_first_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies during the second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "generate_batch", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        infer.main(infer_args(tiny_gemma2, tiny_adapter, out, "--batch_size", "3"))
    partial = read(tmp_path / "output.progress.jsonl")  # whole JSONL with the first batch only
    assert len(partial) == 3 and not out.exists() and not list(tmp_path.glob(".output.jsonl*"))
    monkeypatch.setattr(hf, "generate_batch", real)
    metrics = infer.main(infer_args(tiny_gemma2, tiny_adapter, out, "--batch_size", "3", "--resume"))
    assert metrics["generated"] == 5
    assert out.read_bytes() == straight.read_bytes() and not (tmp_path / "output.progress.jsonl").exists()


def test_dry_run_writes_prompts_without_loading_a_model(tiny_gemma2, tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setattr(kit_models, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    run_config = tiny_adapter.parent / "config.yaml"
    copy = tmp_path / "run"
    shutil.copytree(tiny_adapter.parent, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = run_config.read_text(encoding="utf-8").replace("template: alpaca_ja", "template: gemma_chat")
    (copy / "config.yaml").write_text(config, encoding="utf-8")
    result = infer.main(infer_args(tiny_gemma2, copy / "adapter", tmp_path / "o.jsonl", "--dry_run"))
    prompts = read(infer.Path(result["prompts"]))
    assert len(prompts) == 8 and not (tmp_path / "o.jsonl").exists()
    first = prompts[0]["prompt"]  # the tiny_adapter's template, the task last, 3 examples before it
    assert first.count("<start_of_turn>user") == 4
    assert first.endswith("肉じゃがをおいしく作るコツを三つ教えてください。<end_of_turn>\n<start_of_turn>model\n")
    # most similar last: the cooking reference closest to 肉じゃが sits right before the task
    last_example = first.split("<start_of_turn>user\n")[-2]
    assert any(word in last_example for word in ("料理", "作る", "コツ", "炊く", "焼き", "揚げる"))


def test_examples_dropped_to_fit_the_context(tiny_gemma2, tiny_adapter, tmp_path):
    result = infer.main(infer_args(tiny_gemma2, tiny_adapter, tmp_path / "o.jsonl", "--dry_run",
                                   "--k", "10", "--context_length", "700", "--max_new_tokens", "200"))
    assert result["examples_dropped_to_fit"] > 0 and result["tasks_with_examples_dropped"] > 0
    prompts = read(infer.Path(result["prompts"]))
    assert all(p["prompt_tokens"] <= 500 for p in prompts)
    with pytest.raises(KitError, match="prompt template alone takes more than"):
        infer.main(infer_args(tiny_gemma2, tiny_adapter, tmp_path / "o.jsonl", "--dry_run",
                              "--context_length", "12", "--max_new_tokens", "4"))


def test_a_task_too_long_for_the_context_is_still_answered(tiny_gemma2, tiny_adapter, tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    normal = load_tasks(TASKS)[0]["input"]
    long_input = "長い入力の始まり。" + "とても長い説明が続きます。" * 80 + "最後の質問です。"
    tasks.write_text(json.dumps({"task_id": 0, "input": normal}, ensure_ascii=False) + "\n"
                     + json.dumps({"task_id": 1, "input": long_input}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    args = infer_args(tiny_gemma2, tiny_adapter, tmp_path / "o.jsonl", "--context_length", "400",
                      "--max_new_tokens", "200", "--k", "0")
    args[args.index("--tasks") + 1] = str(tasks)
    result = infer.main(args + ["--dry_run"])
    prompts = read(infer.Path(result["prompts"]))
    assert all(p["prompt_tokens"] + p["max_new_tokens"] <= 400 for p in prompts)
    assert prompts[0]["max_new_tokens"] == 200 and infer.TRUNCATION_MARKER in prompts[1]["prompt"]
    assert "長い入力の始まり" in prompts[1]["prompt"] and "最後の質問です" in prompts[1]["prompt"]
    assert result["tasks_with_input_truncated"] == 1
    assert "tasks.jsonl:2: task 1 does not fit" in capsys.readouterr().err
    metrics = infer.main(args)  # every task answered: a submission, not an abort
    assert metrics["tasks_with_input_truncated"] == 1
    assert [r["task_id"] for r in read(tmp_path / "o.jsonl")] == [0, 1]


def test_validate_subcommand_exit_status(tmp_path, capsys):
    out = tmp_path / "output.jsonl"
    out.write_text("\n".join(good_output(tmp_path)[:7]) + "\n", encoding="utf-8")
    with pytest.raises(KitError, match="1 problem"):
        infer.main(["validate", "--tasks", TASKS, "--output", str(out)])
    assert "has no output" in capsys.readouterr().out


def test_bad_adapter_and_template_fail_before_loading(tiny_gemma2, tmp_path, monkeypatch):
    monkeypatch.setattr(kit_models, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    with pytest.raises(KitError, match="no adapter_config.json"):
        infer.main(infer_args(tiny_gemma2, tmp_path, tmp_path / "o.jsonl"))
    with pytest.raises(KitError, match="unknown prompt template"):
        infer.main(infer_args(tiny_gemma2, tmp_path, tmp_path / "o.jsonl", "--template", "nope"))


def test_judge_flag_scores_the_run_and_records_generations(tiny_gemma2, tiny_adapter, tmp_path):
    config = tmp_path / "judge.yaml"
    config.write_text(f"judge_backend: hf\njudge_model: {tiny_gemma2}\ncache_dir: {tmp_path / 'cache'}\n",
                      encoding="utf-8")
    out = tmp_path / "output.jsonl"
    dev = str(ROOT / "data" / "dev_tasks.jsonl")
    args = infer_args(tiny_gemma2, tiny_adapter, out, "--judge", str(config))
    args[args.index("--tasks") + 1] = dev
    metrics = infer.main(args)
    run_dir = tmp_path / "results" / tiny_adapter.parent.name
    score = json.loads((run_dir / "score.json").read_text(encoding="utf-8"))
    assert 1 <= score["score"] <= 5 and score["n"] == 10 and metrics["score"] == score["score"]
    generations = read(run_dir / "generations.jsonl")
    assert [g["task_id"] for g in generations] == list(range(10))
    assert all(g["stop_reason"] in ("eos", "stop_string", "length") and 0 < g["new_tokens"] <= 24
               for g in generations)
    truncated = sum(g["stop_reason"] == "length" for g in generations)
    assert metrics["truncated_at_max_new_tokens"] == truncated == score["flag_counts"].get("truncated", 0)
    assert [r["task_id"] for r in read(out)] == list(range(10))  # output.jsonl stays task_id/input/output
    assert set(read(out)[0]) == {"task_id", "input", "output"}
    config.write_text("judge_backend: hf\njudge_modle: x\n", encoding="utf-8")
    with pytest.raises(KitError, match="judge_modle \\(did you mean judge_mode, judge_model"):
        infer.main(args)


def test_reference_repeating_a_task_is_reported(tiny_gemma2, tiny_adapter, tmp_path, capsys):
    leaked = tmp_path / "reference.jsonl"
    task = load_tasks(TASKS)[1]
    leaked.write_text(Path(REFERENCE).read_text(encoding="utf-8") + json.dumps(
        {"input": "前置き。" + task["input"] + "という質問", "output": "答え"}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    args = infer_args(tiny_gemma2, tiny_adapter, tmp_path / "o.jsonl", "--dry_run")
    args[args.index("--reference") + 1] = str(leaked)
    infer.main(args)
    assert f"task {task['task_id']!r} shares 40+ characters (or its whole input)" in capsys.readouterr().err
    args.remove("--dry_run")
    args += ["--limit", "2"]
    metrics = infer.main(args)
    assert [hit["task_id"] for hit in metrics["task_overlaps"]] == [task["task_id"]]


def test_score_joins_the_training_runs_wandb_run_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="llm2024-kit", dir=str(tmp_path), mode="offline")
    run.log({"loss": 1.0})
    run.finish()
    from kit.runs import RunDir
    from kit.tracking import log_score

    for _ in range(2):  # scored twice: both go to the training run's id
        log_score(RunDir(tmp_path), {"score": 3.5, "ci95": [3.0, 4.0], "prompt_hash": "abc"})
    wandb.teardown()  # wandb's process-wide settings would send later runs to this folder
    folders = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 3 and all(name.split("-")[3] == run.id for name in folders)


def test_a_lone_surrogate_in_a_task_never_reaches_the_tokenizer(tiny_gemma2, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"task_id": 0, "input": "壊れた\\ud800文字"}\n', encoding="utf-8")
    result = infer.main(["--model", str(tiny_gemma2), "--tasks", str(tasks), "--k", "0", "--dry_run",
                         "--output", str(tmp_path / "o.jsonl"), "--results_dir", str(tmp_path / "r")])
    assert "壊れた\ufffd文字" in read(infer.Path(result["prompts"]))[0]["prompt"]
