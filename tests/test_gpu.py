"""The GPU path (`pytest -m gpu`): skipped without CUDA. unsloth training and inference, 4-bit
batched generation, vllm with the adapter against hf greedy, quantize_push's merge on a GPU."""
import importlib.util
import json

import pytest
from conftest import ROOT

pytestmark = pytest.mark.gpu
TASKS = str(ROOT / "data" / "sample_tasks.jsonl")
REFERENCE = str(ROOT / "data" / "sample_reference_qa.jsonl")


def needs(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make install-gpu)")


@pytest.fixture(scope="module")
def unsloth_run(tiny_gemma2, tmp_path_factory):
    needs("unsloth")
    import train

    results = tmp_path_factory.mktemp("gpu-runs")
    metrics = train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                          str(tiny_gemma2), "--data_files", REFERENCE, "--results_dir", str(results),
                          "--report_to", "none", "--backend", "unsloth", "--use_cpu", "false",
                          "--bf16", "true", "--max_steps", "40"])
    return metrics, results / metrics["run"] / "adapter"


def test_unsloth_trains_and_the_adapter_reloads_in_hf(unsloth_run, tiny_gemma2):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics, adapter = unsloth_run
    assert metrics["backend"] == "unsloth"
    assert metrics["train_loss"][-1]["loss"] < metrics["train_loss"][0]["loss"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma2)
    ids = tokenizer("日本の首都はどこですか？", return_tensors="pt").input_ids.cuda()
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma2, dtype=torch.bfloat16,
                                                attn_implementation="eager").cuda()
    with torch.no_grad():
        before = base(ids).logits.float()
        tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
        after = tuned(ids).logits.float()
        again = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_gemma2, dtype=torch.bfloat16,
                                                 attn_implementation="eager").cuda(), str(adapter))(ids).logits.float()
    assert (after - before).abs().max() > 1e-2  # the adapter changes the model
    assert torch.allclose(after, again, atol=1e-3)  # and reloads to the same logits


def test_unsloth_inference_writes_a_valid_submission(unsloth_run, tiny_gemma2, tmp_path):
    import infer

    _, adapter = unsloth_run
    out = tmp_path / "output.jsonl"
    metrics = infer.main(["--model", str(tiny_gemma2), "--adapter", str(adapter), "--tasks", TASKS,
                          "--reference", REFERENCE, "--k", "3", "--max_new_tokens", "24", "--backend",
                          "unsloth", "--output", str(out), "--results_dir", str(tmp_path / "results")])
    assert metrics["backend"] == "unsloth" and len(out.read_text(encoding="utf-8").splitlines()) == 8


def test_hf_4bit_batched_equals_one_at_a_time(tiny_gemma2):
    from kit.generation import Sampling, generate_batch
    from kit.models import load_for_generation
    from kit.tasks import load_tasks

    model, tokenizer = load_for_generation(str(tiny_gemma2), load_in_4bit=True)
    prompts = ["### 質問:\n" + t["input"] + "\n\n### 回答:\n" for t in load_tasks(TASKS)]
    sampling = Sampling(max_new_tokens=16)
    batched = [g.text for g in generate_batch(model, tokenizer, prompts, sampling)]
    single = [generate_batch(model, tokenizer, [p], sampling)[0].text for p in prompts]
    assert batched == single


def test_vllm_with_the_adapter_agrees_with_hf_greedy(unsloth_run, tiny_gemma2, tmp_path):
    needs("vllm")
    import infer

    _, adapter = unsloth_run
    answers = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"{backend}.jsonl"
        infer.main(["--model", str(tiny_gemma2), "--adapter", str(adapter), "--tasks", TASKS, "--k", "0",
                    "--max_new_tokens", "8", "--repetition_penalty", "1.0", "--backend", backend,
                    "--output", str(out), "--results_dir", str(tmp_path / backend)])
        answers[backend] = [json.loads(line)["output"] for line in out.read_text(encoding="utf-8").splitlines()]
    # bf16 kernels differ: the first few characters of most answers must agree
    agree = sum(a[:4] == b[:4] for a, b in zip(answers["hf"], answers["vllm"]))
    assert agree >= len(answers["hf"]) * 3 // 4, answers


def test_quantize_push_merge_on_gpu(unsloth_run, tiny_gemma2, tmp_path):
    import quantize_push

    _, adapter = unsloth_run
    report = quantize_push.main(["--model", str(tiny_gemma2), "--adapter", str(adapter),
                                 "--output", str(tmp_path / "merged-4bit")])
    assert report["peak_gpu_memory_gb"] > 0 and (tmp_path / "merged-4bit" / "README.md").exists()
