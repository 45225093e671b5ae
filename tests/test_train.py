"""train.py through its real entry point on the tiny Gemma-2."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import train
from kit.io import KitError
from prompts import load_template

ROOT = train.Path(train.__file__).parent
DATA = str(ROOT / "data" / "sample_reference_qa.jsonl")


def base_args(model, results, *extra):
    return ["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(model),
            "--data_files", DATA, "--results_dir", str(results), "--report_to", "none",
            "--learning_rate", "5e-3", *extra]


def parsed(argv):
    """(TrainSettings, SFTConfig, explicit SFT names), as train.main reads them."""
    from kit.training import parse_train, sft_config

    settings, info = parse_train(argv)
    sft, explicit = sft_config(info)
    return settings, sft, explicit


def read_metrics(results, run):
    return json.loads((results / run / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(tiny_gemma2, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    metrics = train.main(base_args(tiny_gemma2, results, "--max_steps", "24", "--val_size", "4",
                                   "--eval_steps", "8"))
    return results, metrics


def test_loss_falls_and_run_files_written(trained):
    results, metrics = trained
    losses = [point["loss"] for point in metrics["train_loss"]]
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.3
    assert len(metrics["eval_loss"]) == 3 and metrics["best_eval_loss"] <= metrics["eval_loss"][0]["loss"]
    run_dir = results / metrics["run"]
    assert metrics["run"] == "r8-a16-lr0.005-s24-alpaca_ja"
    for name in ("config.yaml", "metrics.json", "loss.png", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/tokenizer.json"):
        assert (run_dir / name).exists(), name
    assert metrics["train_examples"] == 32 and metrics["eval_examples"] == 4
    assert metrics["train_tokens_per_s"] > 0 and metrics["peak_cpu_memory_gb"] > 0
    assert metrics["versions"]["transformers"] and metrics["backend"] == "hf"
    rows = (results / "trials.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 and rows[1].startswith(metrics["run"] + ",,ok,,,,8,16,")
    assert (results / "TRIALS.md").exists() and (results / "trials.png").exists()


def test_adapter_reloads_and_changes_logits(trained, tiny_gemma2):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results, metrics = trained
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma2)
    ids = tokenizer("### 質問:\n料理のコツは？\n\n### 回答:\n", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma2, attn_implementation="eager")
    with torch.no_grad():
        before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, results / metrics["run"] / "adapter")
    with torch.no_grad():
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-2


def test_config_yaml_alone_reproduces_the_run(trained, tmp_path):
    results, metrics = trained
    config = results / metrics["run"] / "config.yaml"
    again = train.main(["--config", str(config), "--results_dir", str(tmp_path)])
    assert again["run"] == metrics["run"]
    assert again["final_train_loss"] == pytest.approx(metrics["final_train_loss"], abs=1e-5)


def test_finished_run_is_refused_without_overwrite(trained, tiny_gemma2):
    results, _ = trained
    with pytest.raises(KitError, match="finished run.*--overwrite"):
        train.main(base_args(tiny_gemma2, results, "--max_steps", "24", "--val_size", "4",
                             "--eval_steps", "8"))


def test_labels_mask_the_prompt_only_in_completion_mode(tiny_gemma2, tmp_path):
    for mode in ("completion", "full"):
        settings, sft, explicit = parsed(base_args(tiny_gemma2, tmp_path, "--loss_on", mode, "--max_steps", "1"))
        trainer, *_ = train.build_trainer(settings, sft, explicit, "hf")
        example = trainer.train_dataset[0]
        labels, ids = example["labels"], example["input_ids"]
        first = json.loads(Path(DATA).read_text(encoding="utf-8").splitlines()[0])
        prompt = load_template("alpaca_ja").prompt(first["input"])
        prompt_len = len(trainer.processing_class(prompt).input_ids)
        assert prompt_len > 10 and ids[:prompt_len] == trainer.processing_class(prompt).input_ids
        if mode == "completion":
            assert labels[:prompt_len] == [-100] * prompt_len
            assert labels[prompt_len:] == ids[prompt_len:]
        else:
            assert labels == ids
        assert ids[-1] == trainer.processing_class.eos_token_id


def test_sweep_two_trials_and_skip_completed(tiny_gemma2, tmp_path):
    args = base_args(tiny_gemma2, tmp_path, "--max_steps", "3", "--save_steps", "100")
    outcomes = train.main(args + ["--sweep", "lora_r=4,8", "lora_alpha=8"])
    assert [o["status"] for o in outcomes] == ["ok", "ok"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "r4-a8-lr0.005-s3-alpaca_ja", "r8-a8-lr0.005-s3-alpaca_ja"]
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 3
    # a rerun skips finished trials
    assert [o["status"] for o in train.main(args + ["--sweep", "lora_r=4,8", "lora_alpha=8"])] == ["skipped"] * 2
    # a bad value in any trial is refused before anything trains
    with pytest.raises(KitError, match="lora_r and lora_alpha must be positive"):
        train.main(args + ["--sweep", "lora_r=4,0", "lora_alpha=8"])
    assert not (tmp_path / "r0-a8-lr0.005-s3-alpaca_ja").exists()
    # a trial that fails while it runs is recorded, and the sweep as a whole fails (a script or CI
    # running it must see it)
    with pytest.raises(KitError, match="1 of 1 sweep step"):
        train.main(args + ["--sweep", "max_length=20"])
    run = tmp_path / "r8-a16-lr0.005-s3-alpaca_ja-max_length20"
    assert "shorter than the 'alpaca_ja' prompt template" in json.loads((run / "failed.json").read_text())["error"]
    assert ",failed," in (tmp_path / "trials.csv").read_text()
    assert "shorter than the 'alpaca_ja' prompt template" in (run / "train.log").read_text()  # streamed, kept


def test_any_key_can_be_swept(tiny_gemma2, tmp_path):
    args = base_args(tiny_gemma2, tmp_path, "--max_steps", "2", "--save_steps", "100")
    train.main(args + ["--sweep", "lora_dropout=0.0,0.1"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "r8-a16-lr0.005-s2-alpaca_ja-lora_dropout0.0", "r8-a16-lr0.005-s2-alpaca_ja-lora_dropout0.1"]


def test_resume_from_checkpoint(tiny_gemma2, tmp_path):
    first = tmp_path / "a"
    train.main(base_args(tiny_gemma2, first, "--max_steps", "10", "--save_steps", "5"))
    run = first / "r8-a16-lr0.005-s10-alpaca_ja"
    assert (run / "checkpoints" / "checkpoint-10").exists()
    # a killed run: only the step-5 checkpoint and no metrics
    import shutil
    shutil.rmtree(run / "checkpoints" / "checkpoint-10")
    (run / "metrics.json").unlink()
    # mark the checkpoint's logged step-5 loss: a resumed run keeps that history, a restart would not
    state_file = run / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 123.0
    state_file.write_text(json.dumps(state))
    resumed = train.main(base_args(tiny_gemma2, first, "--max_steps", "10", "--save_steps", "5",
                                   "--resume_from_checkpoint", "true"))
    assert resumed["global_step"] == 10
    assert [(p["step"], p["loss"] == 123.0) for p in resumed["train_loss"]] == [(5, True), (10, False)]
    straight = train.main(base_args(tiny_gemma2, tmp_path / "b", "--max_steps", "10", "--save_steps", "5"))
    assert resumed["final_train_loss"] == pytest.approx(straight["final_train_loss"], rel=1e-3)


def test_qlora_4bit_trains_on_cpu(tiny_gemma2, tmp_path):
    metrics = train.main(base_args(tiny_gemma2, tmp_path, "--load_in_4bit", "true",
                                   "--max_steps", "12"))
    losses = [p["loss"] for p in metrics["train_loss"]]
    assert losses[-1] < losses[0]
    # bitsandbytes on a CPU with AVX512-BF16 repacks 4-bit weights after an eval-mode forward and
    # training then silently does nothing: LoRA's B matrices (zero at init) must have moved
    from safetensors.torch import load_file

    weights = load_file(tmp_path / metrics["run"] / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)
    config = json.loads((tmp_path / metrics["run"] / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_wandb_offline_writes_run_files(tiny_gemma2, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = [a for a in base_args(tiny_gemma2, tmp_path, "--max_steps", "2") if a not in ("--report_to", "none")]
    metrics = train.main(args)
    runs = list((tmp_path / metrics["run"] / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("change,message", [
    (["--data_files", "missing.jsonl"], "missing.jsonl: no such file"),
    (["--template", "nope"], "unknown prompt template 'nope'"),
    (["--lora_r", "0"], "must be positive"),
    (["--max_length", "20"], "shorter than the 'alpaca_ja' prompt template"),
])
def test_bad_input_fails_before_model_load(tiny_gemma2, tmp_path, change, message, monkeypatch):
    from kit import models as common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    with pytest.raises(KitError, match=message):
        train.main(base_args(tiny_gemma2, tmp_path, "--max_steps", "1") + change)


def test_bad_records_and_config_keys(tiny_gemma2, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "質問", "response": "回答"}\n{"instruction": "質問だけ"}\n',
                   encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(KitError, match=r"bad\.jsonl:2: record needs"):
        train.main(base_args(tiny_gemma2, tmp_path) + ["--data_files", str(bad)])
    with pytest.raises(KitError, match=r"empty\.jsonl: no records"):
        train.main(base_args(tiny_gemma2, tmp_path) + ["--data_files", str(empty)])
    config = tmp_path / "typo.yaml"
    config.write_text("lora_rank: 8\n", encoding="utf-8")
    with pytest.raises(KitError, match="unknown key.*lora_rank.*did you mean .*lora_r"):
        train.main(["--config", str(config)])


def test_overlong_examples_dropped_and_counted(tiny_gemma2, tmp_path):
    long = tmp_path / "long.jsonl"
    rows = [{"instruction": "短い質問です。", "response": "短い回答です。"}] * 6
    rows.append({"instruction": "長い質問です。", "response": "とても長い回答です。" * 200})
    long.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    settings, sft, explicit = parsed(base_args(tiny_gemma2, tmp_path, "--overlong", "drop", "--max_steps", "1",
                                               "--eval_file", DATA) + ["--data_files", str(long)])
    trainer, _, counts = train.build_trainer(settings, sft, explicit, "hf")
    assert counts["train_overlong_dropped"] == 1 and len(trainer.train_dataset) == 6
    assert len(trainer.eval_dataset) == 36 and trainer.args.eval_strategy == "steps"


def test_runs_unchanged_under_accelerate_launch(tiny_gemma2, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", ACCELERATE_USE_CPU="true")
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
         str(ROOT / "train.py"), *base_args(tiny_gemma2, tmp_path, "--max_steps", "2")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "r8-a16-lr0.005-s2-alpaca_ja" / "metrics.json").exists()


def test_seed_recipe_matches_the_write_up():
    recipe = yaml.safe_load((ROOT / "configs" / "gemma2_27b_seed.yaml").read_text(encoding="utf-8"))
    assert {k: recipe[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "learning_rate",
                                   "warmup_steps", "optim", "weight_decay", "neftune_noise_alpha",
                                   "per_device_train_batch_size", "gradient_accumulation_steps",
                                   "num_train_epochs", "max_length", "seed", "save_steps",
                                   "save_total_limit", "lr_scheduler_type", "bf16")} == {
        "lora_r": 64, "lora_alpha": 64, "lora_dropout": 0.0, "learning_rate": 2e-4,
        "warmup_steps": 300, "optim": "adamw_8bit", "weight_decay": 0.01, "neftune_noise_alpha": 5,
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "num_train_epochs": 2,
        "max_length": 2048, "seed": 3407, "save_steps": 300, "save_total_limit": 10,
        "lr_scheduler_type": "linear", "bf16": True}


@pytest.mark.gpu
def test_unsloth_backend_trains_on_gpu(tiny_gemma2, tmp_path):
    metrics = train.main(base_args(tiny_gemma2, tmp_path, "--backend", "unsloth", "--use_cpu", "false",
                                   "--bf16", "true", "--max_steps", "10"))
    assert metrics["backend"] == "unsloth"
    assert metrics["train_loss"][-1]["loss"] < metrics["train_loss"][0]["loss"]


def test_push_adapter_sends_the_adapter_and_never_prints_the_token(tiny_gemma2, tmp_path, fake_hub,
                                                                     capsys):
    train.main(base_args(tiny_gemma2, tmp_path, "--max_steps", "2", "--push_adapter_to", "me/tiny-lora"))
    assert fake_hub.calls[0] == ("init", fake_hub.token)
    assert fake_hub.calls[1] == ("create_repo", "me/tiny-lora", False)
    assert fake_hub.calls[2][:2] == ("upload_folder", "me/tiny-lora")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(fake_hub.calls[2][2])
    fake_hub.assert_token_not_leaked(capsys.readouterr(), tmp_path)


def test_push_without_token_fails_before_training(tiny_gemma2, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(KitError, match="HF_TOKEN .*`hf auth login`"):
        train.main(base_args(tiny_gemma2, tmp_path, "--push_adapter_to", "me/tiny-lora"))


def test_scored_sweep_trains_once_and_scores_each_inference_setting(tiny_gemma2, tmp_path):
    from kit.testing.stub_openai import StubJudgeServer

    def grade(prompt):  # any deterministic grade: the answers differ between k=0 and k=2
        return 1 + len(prompt.split("# 回答")[-1]) % 5

    with StubJudgeServer(grade) as server:
        config = tmp_path / "score.yaml"
        config.write_text(
            f"tasks: {ROOT / 'data' / 'dev_tasks.jsonl'}\nreference: {DATA}\n"
            f"max_new_tokens: 32\nban: ['---', '###']\njudge_backend: openai\nbase_url: {server.url}\n"
            f"judge_model: stub\njudge_mode: digit\ncache_dir: {tmp_path / 'cache'}\n", encoding="utf-8")
        results = tmp_path / "runs"
        args = base_args(tiny_gemma2, results, "--max_steps", "120", "--learning_rate", "1e-2",
                         "--save_steps", "100")
        outcomes = train.main(args + ["--sweep", "k=0,2", "--score", str(config)])
    assert [o["status"] for o in outcomes] == ["ok", "ok", "ok"]  # one training, two inferences
    run = results / "r8-a16-lr0.01-s120-alpaca_ja"
    assert [p.name for p in results.iterdir() if p.is_dir()] == [run.name]
    scores = {p.parent.name: json.loads(p.read_text())["score"] for p in run.glob("infer/*/score.json")}
    assert set(scores) == {"k0", "k2"} and all(1 <= s <= 5 for s in scores.values())
    answered = sum(1 for k in ("k0", "k2") for line in (run / "infer" / k / "output.jsonl").open()
                   if json.loads(line)["output"].strip())
    # empty answers score 1 without a judge call; an answer both settings gave is judged once (cache)
    assert 0 < len(server.requests) <= answered
    rows = list(csv.DictReader((results / "trials.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["inference"] for r in rows] == sorted(scores, key=lambda k: (-scores[k], k))
    assert [float(r["score"]) for r in rows] == sorted(scores.values(), reverse=True)
    assert all(r["judge"] == "openai:stub" and r["prompt_hash"] for r in rows)
    assert (run / "train.log").exists() and (run / "infer" / "k2" / "infer.log").exists()


def test_training_logs_are_one_line_per_step_not_raw_dicts(tiny_gemma2, tmp_path, capfd):
    train.main(base_args(tiny_gemma2, tmp_path, "--max_steps", "4", "--logging_steps", "2",
                         "--disable_tqdm", "false"))
    out = capfd.readouterr()
    text = out.out + out.err
    assert "step 2/4: loss" in text and "{'loss'" not in text
