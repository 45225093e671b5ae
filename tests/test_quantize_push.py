"""quantize_push.py on the tiny Gemma-2: requantize, merge + check, model card, push."""
import json
import shutil

import pytest

import quantize_push
import train
from kit.io import KitError

ROOT = quantize_push.Path(quantize_push.__file__).parent


@pytest.fixture(scope="module")
def adapter(tiny_gemma2, tmp_path_factory):
    results = tmp_path_factory.mktemp("runs")
    metrics = train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                          str(tiny_gemma2), "--data_files", str(ROOT / "data" / "sample_reference_qa.jsonl"),
                          "--results_dir", str(results), "--report_to", "none", "--max_steps", "20"])
    return results / metrics["run"] / "adapter"


def test_requantize_reload_generate_and_template_added(tiny_gemma2_base, tmp_path):
    out = tmp_path / "q"
    report = quantize_push.main(["--model", str(tiny_gemma2_base), "--output", str(out)])
    assert report["chat_template_added"] is True
    assert report["verify"]["linear_4bit"] == report["verify"]["linear_layers"] == 14
    assert isinstance(report["verify"]["sample"], str)
    config = json.loads((out / "config.json").read_text())
    quant = config["quantization_config"]
    assert (quant["bnb_4bit_quant_type"], quant["bnb_4bit_use_double_quant"],
            quant["bnb_4bit_compute_dtype"]) == ("nf4", True, "bfloat16")
    from transformers import AutoTokenizer

    assert "<start_of_turn>" in AutoTokenizer.from_pretrained(out).chat_template
    assert not (tmp_path / ".q.partial").exists() and not (tmp_path / ".q.partial-merge").exists()


def test_existing_chat_template_is_kept(tiny_gemma2, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "custom"
    shutil.copytree(tiny_gemma2, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = tokenizer.chat_template + "{# custom template #}"
    tokenizer.save_pretrained(model)
    report = quantize_push.main(["--model", str(model), "--output", str(tmp_path / "q")])
    assert report["chat_template_added"] is False
    assert AutoTokenizer.from_pretrained(tmp_path / "q").chat_template.endswith("{# custom template #}")


def test_merge_passes_the_logit_check_and_card_names_the_run(tiny_gemma2, adapter, tmp_path):
    import infer

    infer.main(["--model", str(tiny_gemma2), "--adapter", str(adapter), "--tasks",
                str(ROOT / "data" / "sample_tasks.jsonl"), "--k", "0", "--max_new_tokens", "8",
                "--repetition_penalty", "1.05", "--limit", "2", "--output", str(tmp_path / "o.jsonl"),
                "--results_dir", str(adapter.parent.parent)])
    out = tmp_path / "merged-4bit"
    report = quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(adapter),
                                 "--output", str(out), "--merge_dtype", "float32",
                                 "--logit_tolerance", "1e-3"])
    assert report["merge_max_logit_difference"] < 1e-3
    assert report["verify"]["linear_4bit"] == 14
    card = (out / "README.md").read_text(encoding="utf-8")
    run = yaml_load(adapter.parent / "config.yaml")
    assert f"LoRA r {run['lora_r']}, alpha {run['lora_alpha']}" in card
    assert f"python train.py --config {adapter.parent / 'config.yaml'}" in card
    assert f"--adapter {adapter}" in card and "Synthetic data" in card
    assert f"base_model: {tiny_gemma2}" in card
    # what ran, not what was asked: max_steps 20 over 32 examples is more than the 1 epoch asked
    epochs = json.loads((adapter.parent / "metrics.json").read_text())["epochs_run"]
    assert epochs > 1 and f"{epochs} epochs run (num_train_epochs 1" in card
    assert f"python infer.py --model {out} --tasks" in card and "--repetition_penalty 1.05" in card


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_corrupted_merge_fails_the_check(tiny_gemma2, adapter, tmp_path, monkeypatch):
    import torch
    from peft.tuners.tuners_utils import BaseTuner

    real_merge = BaseTuner.merge_and_unload

    def corrupted_merge(self, *args, **kwargs):  # a merge that got one projection wrong
        merged = real_merge(self, *args, **kwargs)
        with torch.no_grad():
            for layer in merged.model.layers:
                layer.mlp.down_proj.weight.mul_(-1.0)
        return merged

    monkeypatch.setattr(BaseTuner, "merge_and_unload", corrupted_merge)
    out = tmp_path / "bad"
    with pytest.raises(KitError, match="logits differ from base\\+adapter"):
        quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(adapter), "--output", str(out),
                            "--merge_dtype", "float32"])
    assert not out.exists() and not (tmp_path / ".bad.partial").exists()


def test_no_quantize_saves_the_bf16_merge(tiny_gemma2, adapter, tmp_path):
    out = tmp_path / "merged-bf16"
    report = quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(adapter),
                                 "--output", str(out), "--no_quantize"])
    assert report["verify"]["linear_4bit"] == 0
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_push_sends_the_folder_and_never_the_token(tiny_gemma2, tmp_path, fake_hub, capsys):
    out = tmp_path / "q"
    quantize_push.main(["--model", str(tiny_gemma2), "--output", str(out), "--push_to", "me/tiny-4bit",
                        "--private"])
    assert fake_hub.calls[0] == ("init", fake_hub.token)
    assert fake_hub.calls[1] == ("create_repo", "me/tiny-4bit", True)
    name, repo, files = fake_hub.calls[2]
    assert (name, repo) == ("upload_folder", "me/tiny-4bit")
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    fake_hub.assert_token_not_leaked(capsys.readouterr(), out)


def test_push_failure_keeps_the_folder_and_says_how_to_retry(tiny_gemma2, tmp_path, fake_hub):
    out = tmp_path / "q"
    fake_hub.fail_upload = True
    with pytest.raises(KitError, match=f"--push_only {out} --push_to me/x"):
        quantize_push.main(["--model", str(tiny_gemma2), "--output", str(out), "--push_to", "me/x"])
    assert (out / "model.safetensors").exists()
    fake_hub.fail_upload = False
    quantize_push.main(["--push_only", str(out), "--push_to", "me/x"])
    assert fake_hub.calls[-1][:2] == ("upload_folder", "me/x")


@pytest.mark.parametrize("make_args,message", [
    (lambda m, a, t: ["--model", str(t / "nope"), "--output", str(t / "o")], "no such model directory"),
    (lambda m, a, t: ["--model", str(m), "--output", str(t)], "exists; pass --overwrite"),
    (lambda m, a, t: ["--model", "google/gemma-2-9b", "--adapter", str(a), "--output", str(t / "o")],
     "was trained on .* not on --model 'google/gemma-2-9b'"),
    (lambda m, a, t: ["--model", str(m), "--output", str(t / "o"), "--strict"], "not one of the allowed"),
    (lambda m, a, t: ["--model", "unsloth/gemma-2-27b-bnb-4bit", "--output", str(t / "o"), "--strict"],
     "pre-quantized by another publisher"),
    (lambda m, a, t: ["--model", str(m), "--output", str(t / "o"), "--push_to", "me/x"], "HF_TOKEN"),
])
def test_bad_input_fails_before_heavy_work(tiny_gemma2, adapter, tmp_path, monkeypatch, make_args,
                                           message):
    import transformers

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(quantize_push, "hub_token", lambda: None if "HF_TOKEN" not in __import__("os").environ
                        else "x")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(KitError, match=message):
        quantize_push.main(make_args(tiny_gemma2, adapter, tmp_path))


def test_allowed_bases_pass_the_rules_guard(capsys):
    for name in ("google/gemma-2-27b", "google/gemma-2-2b", "llm-jp/llm-jp-3-13b"):
        quantize_push.check_rules(name, strict=True)
    quantize_push.check_rules("google/gemma-2-27b-it", strict=False)
    assert "not one of the allowed" in capsys.readouterr().err
