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
sys.path.insert(0, str(ROOT / "tools"))

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
    from kit.tiny import build_tiny_gemma2

    return build_tiny_gemma2(tmp_path_factory.mktemp("models") / "tiny-gemma2")


@pytest.fixture(scope="session")
def tiny_gemma2_base(tmp_path_factory) -> Path:
    """The same without a chat template, as google/gemma-2-27b ships."""
    from kit.tiny import build_tiny_gemma2

    return build_tiny_gemma2(tmp_path_factory.mktemp("models") / "tiny-gemma2-base", chat_template=False)


@pytest.fixture(scope="session")
def tiny_colbert(tmp_path_factory) -> Path:
    from kit.tiny import build_tiny_colbert

    return build_tiny_colbert(tmp_path_factory.mktemp("models") / "tiny-colbert")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_gemma2, tmp_path_factory):
    """The demo recipe's adapter: trained enough for the tiny model to answer in text."""
    results = tmp_path_factory.mktemp("runs")
    import train

    metrics = train.main(["--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model_name_or_path",
                          str(tiny_gemma2), "--data_files", str(ROOT / "data" / "sample_reference_qa.jsonl"),
                          "--results_dir", str(results),
                          "--report_to", "none"])
    return results / metrics["run"] / "adapter"


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi at the Hub boundary and records what would be sent."""
    token = "hf_secret_token_for_tests_123"
    calls: list = []
    fail_upload = False

    def __init__(self, token=None):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, private))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        if FakeHfApi.fail_upload:
            raise ConnectionError("simulated network failure")
        files = sorted(p.name for p in Path(folder_path).iterdir())
        FakeHfApi.calls.append(("upload_folder", repo_id, files))

    @classmethod
    def assert_token_not_leaked(cls, captured, folder: Path):
        assert cls.token not in captured.out + captured.err
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".yaml", ".md", ".csv", ".txt", ".jinja"):
                assert cls.token not in path.read_text(errors="ignore"), path


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHfApi.calls, FakeHfApi.fail_upload = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", FakeHfApi.token)
    return FakeHfApi
