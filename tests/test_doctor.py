"""kit.doctor: every check is one line and nothing raises, here on a CPU machine."""
import subprocess
import sys

from conftest import ROOT

from kit.doctor import checks, version_tuple


def test_doctor_reports_the_cpu_machine_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "kit.doctor"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok  torch ") and lines[-1].endswith(("to look at", "GPU path"))
    import torch

    if not torch.cuda.is_available():
        assert any("no CUDA GPU" in line or "CPU build" in line or "driver" in line for line in lines)
    assert any("GiB free" in text for _, text in checks(str(ROOT)))


def test_version_tuple():
    assert version_tuple("12.8") < version_tuple("13.0") and version_tuple(None) == ()


def test_bench_gpu_runs_on_tiny_shapes_here(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--sizes", "tiny", "--batches", "1,4", "--out", str(tmp_path)])
    tiny = report["sizes"]["tiny"]
    assert tiny["hf_bnb_train_tokens_per_s"] > 0 and tiny["generate_b4_tokens_per_s"] > 0
    assert tiny["projected_100_tasks_s_here"] > 0 and "upper bound" in report["projection"]
    assert list(tmp_path.glob("gpu-*.json"))
    two = bench.scaled({"train_tokens_per_s": 100.0, "peak": 1.0}, {"train_tokens_per_s": 50.0, "peak": 1.5}, 4)
    assert two["train_tokens_per_s"] == 1 / (0.01 + 3 * 0.01) and two["peak"] == 2.5
