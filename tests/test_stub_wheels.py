"""tools/stub_wheels.py: pip accepts the stand-ins (make check-gpu-resolution uses them)."""
import subprocess
import sys
import zipfile

from stub_wheels import stub_wheel


def test_pip_resolves_a_stand_in_wheel(tmp_path):
    wheel = stub_wheel(tmp_path, "nvidia-nccl-cu13==2.29.7")
    assert wheel.name == "nvidia_nccl_cu13-2.29.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert "Version: 2.29.7" in archive.read("nvidia_nccl_cu13-2.29.7.dist-info/METADATA").decode()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                           "--find-links", str(tmp_path), "--target", str(tmp_path / "t"),
                           "nvidia-nccl-cu13==2.29.7"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
