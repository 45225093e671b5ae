"""Session fixtures: an offline, single-threaded environment and tiny locally built checkpoints."""
import os
import sys
from pathlib import Path

# Before torch/transformers/wandb are imported anywhere: no hub, no wandb network, one thread
# (two torch threads on two cores are erratic and slower).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (and unsloth); skipped without a GPU")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory) -> Path:
    """A 2-layer Gemma-2 with a locally trained tokenizer, saved and reloadable through
    AutoModelForCausalLM/AutoTokenizer; like the base gemma-2 it has no chat template."""
    from tiny_models import build_tiny_gemma2

    return build_tiny_gemma2(tmp_path_factory.mktemp("models") / "tiny-gemma2")


@pytest.fixture(scope="session")
def tiny_colbert(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_colbert

    return build_tiny_colbert(tmp_path_factory.mktemp("models") / "tiny-colbert")
