"""train.py under accelerate launch on this CPU: two gloo ranks really train in parallel (DDP and
FSDP), match one process at the same global batch, and leave exactly one set of run files."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false"}
RUN = "r8-a16-lr0.005-s4-alpaca_ja"
RUN_FILES = ["adapter", "checkpoints", "config.yaml", "loss.png", "metrics.json"]


def train_args(model, results, batch):
    return ["train.py", "--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path", str(model),
            "--data_files", str(ROOT / "data" / "sample_reference_qa.jsonl"), "--results_dir", str(results),
            "--max_steps", "4", "--logging_steps", "1", "--per_device_train_batch_size", str(batch),
            "--report_to", "none", "--learning_rate", "5e-3"]


def launch(launcher_args, model, results):
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launcher_args,
                           *train_args(model, results, 4)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(results):
    return [p["loss"] for p in json.loads((results / RUN / "metrics.json").read_text())["train_loss"]]


@pytest.fixture(scope="module")
def one_process(tiny_gemma2, tmp_path_factory):
    """The reference: one process, batch 8, the global batch of 2 ranks x 4."""
    results = tmp_path_factory.mktemp("one")
    done = subprocess.run([sys.executable, *train_args(tiny_gemma2, results, 8)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return results


def test_ddp_two_ranks_match_one_process_three_runs_in_a_row(tiny_gemma2, one_process, tmp_path):
    expected = losses(one_process)
    for attempt in range(3):
        results = tmp_path / f"ddp{attempt}"
        done = launch(["--config_file", str(ROOT / "configs" / "accelerate_ddp.yaml"), "--num_processes", "2"],
                      tiny_gemma2, results)
        assert losses(results)[:4] == pytest.approx(expected[:4], abs=1e-3)
        assert sorted(p.name for p in (results / RUN).iterdir()) == RUN_FILES  # one set, no strays
        assert sorted(p.name for p in results.iterdir()) == ["TRIALS.md", RUN, "trials.csv", "trials.png"]
        assert done.stdout.count(f"run {RUN}:") == 1  # the main process alone reports
        metrics = json.loads((results / RUN / "metrics.json").read_text())
        reference = json.loads((one_process / RUN / "metrics.json").read_text())
        assert metrics["processes"] == 2 and metrics["train_tokens"] == reference["train_tokens"]  # summed


def test_fsdp_two_ranks_match_one_process(tiny_gemma2, one_process, tmp_path):
    """The shipped FSDP file, with the two settings that need a GPU turned off on this CPU."""
    results = tmp_path / "fsdp"
    launch(["--config_file", str(ROOT / "configs" / "accelerate_fsdp_qlora.yaml"), "--num_processes", "2",
            "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"], tiny_gemma2, results)
    assert losses(results)[:4] == pytest.approx(losses(one_process)[:4], abs=1e-3)
    assert (results / RUN / "adapter" / "adapter_model.safetensors").exists()
