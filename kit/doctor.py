"""Check this machine for the GPU path and say what to do about anything that is off.

    python -m kit.doctor            # GPU, driver vs. torch's CUDA, bf16, unsloth/vllm, free disk

Never raises: every check prints one line, `ok` or `fix:` with the command to run.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from kit.io import run_main
from kit.settings import opt, parse_settings

GB = 2**30
DISK_FOR_27B_GB = 120  # bf16 base (55 GB) + merged bf16 (55 GB) + 4-bit result (16 GB), roughly
CUDA12_TORCH = ("pip install --force-reinstall torch==2.13.0 torchvision==0.28.0 "
                "--index-url https://download.pytorch.org/whl/cu128")


def driver_info() -> tuple[str | None, str | None]:
    """(driver version, highest CUDA version it supports) from nvidia-smi, or (None, None)."""
    if not shutil.which("nvidia-smi"):
        return None, None
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    driver = cuda = None
    for part in text.replace("|", " ").split("  "):
        part = part.strip()
        if part.startswith("Driver Version:"):
            driver = part.split(":", 1)[1].strip()
        elif part.startswith("CUDA Version:"):
            cuda = part.split(":", 1)[1].strip()
    return driver, cuda


def version_tuple(text: str | None) -> tuple:
    try:
        return tuple(int(x) for x in str(text).split(".")[:2])
    except ValueError:
        return ()


def checks(disk_path: str = ".") -> list[tuple[bool, str]]:
    results = []
    try:
        import torch
    except Exception as err:  # a broken install is exactly what this command is for
        return [(False, f"torch does not import ({type(err).__name__}: {err}); fix: make install")]
    built_for = torch.version.cuda
    results.append((True, f"torch {torch.__version__}, built for CUDA {built_for or '(CPU only)'}"))
    driver, driver_cuda = driver_info()
    if not torch.cuda.is_available():
        if driver and built_for and version_tuple(driver_cuda) < version_tuple(built_for):
            results.append((False, f"driver {driver} supports CUDA {driver_cuda}, torch needs {built_for}; "
                                   f"fix: {CUDA12_TORCH}"))
        elif driver and not built_for:
            results.append((False, f"a GPU driver ({driver}) is here but torch is a CPU build; fix: "
                                   "pip install --force-reinstall torch==2.13.0 (the PyPI wheel is CUDA 13)"))
        else:
            results.append((False, "no CUDA GPU: the kit runs its CPU path (hf backend); unsloth and "
                                   "vllm need a GPU"))
    else:
        props = torch.cuda.get_device_properties(0)
        results.append((True, f"GPU {props.name}, {props.total_memory / GB:.1f} GiB, driver {driver} "
                              f"(CUDA {driver_cuda})"))
        results.append((torch.cuda.is_bf16_supported(),
                        "bf16 supported" if torch.cuda.is_bf16_supported() else
                        "no bf16 (pre-Ampere GPU): use --bf16 false --fp16 true and compute_dtype float16"))
        if props.total_memory / GB < 20:
            results.append((False, f"{props.total_memory / GB:.0f} GiB is short for 27B in 4-bit "
                                   "(~16 GB of weights): use gemma-2-9b or a larger GPU"))
    for name, advice in (("unsloth", "make install-gpu"), ("vllm", "make install-gpu")):
        try:
            __import__(name)
            results.append((True, f"{name} imports"))
        except Exception as err:
            results.append((False, f"{name} does not import ({type(err).__name__}: {str(err)[:120]}); "
                                   f"fix: {advice} (on a CUDA machine)"))
    free = shutil.disk_usage(disk_path).free / GB
    results.append((free >= DISK_FOR_27B_GB, f"{free:.0f} GiB free on {disk_path}"
                    + ("" if free >= DISK_FOR_27B_GB else
                       f"; a 27B merge + requantize needs about {DISK_FOR_27B_GB} GiB")))
    return results


@dataclass
class DoctorSettings:
    """where the models will be written"""
    disk: str = opt(".", "the folder whose free disk is checked")


def main(argv=None) -> int:
    settings, _ = parse_settings(DoctorSettings, argv, prog="-m kit.doctor", doc=__doc__)
    results = checks(settings.disk)
    for ok, line in results:
        print(f"{'ok ' if ok else '-- '} {line}")
    problems = sum(not ok for ok, _ in results)
    print(f"{problems} thing(s) to look at" if problems else "ready for the GPU path")
    return problems


if __name__ == "__main__":
    run_main(main)
