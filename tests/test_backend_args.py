"""What the kit hands the GPU-only libraries, checked on a CPU: the arguments built for vllm
against the pinned release's own signatures, the import order unsloth needs, and one-line
errors where a GPU package is missing."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from kit.generation.base import Sampling
from kit.generation.vllm import engine_args, lora_args, max_lora_rank, sampling_args
from kit.io import KitError

# Read from vllm 0.32.0's source (requirements-gpu.txt's pin): vllm/engine/arg_utils.py EngineArgs,
# vllm/config/lora.py MaxLoRARanks, vllm/sampling_params.py SamplingParams (temperature in [0, 2],
# top_k 0 or >= 1 or -1), vllm/lora/request.py LoRARequest(lora_name, lora_int_id, lora_path).
ENGINE_ARGS = {"model", "seed", "dtype", "max_model_len", "quantization", "enable_lora", "max_loras",
               "max_lora_rank"}
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
SAMPLING_PARAMS = {"max_tokens", "repetition_penalty", "temperature", "top_p", "top_k", "stop", "seed",
                   "bad_words", "logit_bias"}


@pytest.mark.parametrize("rank", [4, 8, 24, 48, 64, 96, 128, 200, 320, 500])
def test_vllm_lora_rank_is_one_vllm_accepts(rank):
    args = engine_args("google/gemma-2-27b", rank, load_in_4bit=False, max_model_len=8192, seed=1)
    assert set(args) <= ENGINE_ARGS and args["enable_lora"] is True
    assert args["max_lora_rank"] in MAX_LORA_RANKS and args["max_lora_rank"] >= rank
    assert max_lora_rank(24) == 32 and max_lora_rank(96) == 128 and max_lora_rank(16) == 16


def test_vllm_loads_4bit_when_asked():
    assert engine_args("m", None, load_in_4bit=True, max_model_len=4096, seed=0)["quantization"] == "bitsandbytes"
    plain = engine_args("m", None, load_in_4bit=False, max_model_len=4096, seed=0)
    assert "quantization" not in plain and "enable_lora" not in plain and plain["dtype"] == "bfloat16"


def test_vllm_sampling_arguments_are_valid_for_the_pinned_release():
    greedy = sampling_args(Sampling(repetition_penalty=1.1), 512, ["\n### 質問"], ["###"], 3407, [17, 42])
    assert set(greedy) <= SAMPLING_PARAMS and greedy["temperature"] == 0.0 and greedy["top_k"] in (0, -1)
    assert greedy["logit_bias"] == {17: -100.0, 42: -100.0} and greedy["bad_words"] == ["###"]
    sampled = sampling_args(Sampling(do_sample=True, temperature=0.7, top_k=40), 64, [], [], 1)
    assert 0 <= sampled["temperature"] <= 2 and sampled["top_k"] == 40 and "logit_bias" not in sampled
    name, lora_id, path = lora_args("results/run/adapter")
    assert isinstance(name, str) and isinstance(lora_id, int) and lora_id > 0 and path == "results/run/adapter"


def test_vllm_temperature_above_two_is_refused_before_loading(tiny_gemma2, tmp_path):
    import infer

    with pytest.raises(KitError, match="vllm accepts --temperature up to 2"):
        infer.main(["--model", str(tiny_gemma2), "--tasks", str(ROOT / "data" / "sample_tasks.jsonl"),
                    "--backend", "vllm", "--do_sample", "--temperature", "2.5", "--output", str(tmp_path / "o.jsonl")])


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vllm is installed")
def test_a_missing_vllm_is_one_line_naming_the_install(tiny_gemma2, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--model", str(tiny_gemma2), "--tasks",
                           str(ROOT / "data" / "sample_tasks.jsonl"), "--backend", "vllm", "--k", "0",
                           "--output", str(tmp_path / "o.jsonl"), "--results_dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "vllm does not import here" in done.stderr and "make install-gpu" in done.stderr


def test_unsloth_is_imported_before_trl_transformers_and_peft(tiny_gemma2, tmp_path):
    """A stand-in `unsloth` records what was imported before it; the real one warns about those
    and keeps trl's plain trainer. Its model loader then stops the run, with a known message."""
    stub = tmp_path / "stub" / "unsloth"
    stub.mkdir(parents=True)
    record = tmp_path / "imported_before.txt"
    (stub / "__init__.py").write_text(
        "import sys\n"
        f"open({str(record)!r}, 'w').write(','.join(m for m in ('trl', 'transformers', 'peft') if m in sys.modules))\n"
        "class FastLanguageModel:\n"
        "    @staticmethod\n"
        "    def from_pretrained(**kwargs):\n"
        "        raise SystemExit('stand-in unsloth: from_pretrained reached')\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(stub.parent)}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "tiny_cpu.yaml"),
                           "--model_name_or_path", str(tiny_gemma2), "--data_files",
                           str(ROOT / "data" / "sample_reference_qa.jsonl"), "--results_dir", str(tmp_path / "r"),
                           "--backend", "unsloth", "--report_to", "none"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert "stand-in unsloth: from_pretrained reached" in done.stderr, done.stderr[-2000:]
    assert record.read_text() == ""  # nothing of trl, transformers or peft came first
