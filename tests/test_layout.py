"""The file tree shows the pipeline: only stage scripts at the top, no script imports another, the
library imports no script, test helpers stay out of the stages, and the code keeps its shape."""
import ast
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

STAGES = {"quantize_push", "filter_data", "train", "infer", "judge"}
LIBRARY = {"kit", "prompts", "rag"}


def imported_modules(path, top_level_only=True):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name if not top_level_only else alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module if not top_level_only else node.module.split(".")[0]


def tracked(pattern):
    listing = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / name for name in listing.stdout.split()]


def library_files():
    return [p for package in sorted(LIBRARY) for p in tracked(f"{package}/*.py") + tracked(f"{package}/**/*.py")]


def test_only_stage_scripts_at_the_top():
    top = {path.stem for path in tracked("*.py") if path.parent == ROOT}
    assert top and top <= STAGES, top - STAGES


def test_no_script_imports_a_script():
    scripts = [p for p in tracked("*.py") if p.parent == ROOT]
    local = {p.stem for p in scripts} | {"tests", "conftest", "stub_wheels", "code_shape"}
    for path in scripts + tracked("bench/*.py") + tracked("tools/*.py"):
        ours = set(imported_modules(path)) & (local | LIBRARY)
        assert ours <= LIBRARY, f"{path.relative_to(ROOT)} imports {sorted(ours - LIBRARY)}"


def test_library_imports_no_script_and_covers_its_subpackages():
    files = library_files()
    subpackages = {p.parent.name for p in files if p.parent.parent.name == "kit"}
    assert {"generation", "judging", "testing"} <= subpackages, subpackages
    for path in files:
        assert not set(imported_modules(path)) & STAGES, path


def test_stages_never_import_the_test_helpers():
    for path in [p for p in tracked("*.py") if p.parent == ROOT] + [p for p in library_files()
                                                                  if "testing" not in p.parts]:
        helpers = [m for m in imported_modules(path, top_level_only=False) if m.startswith("kit.testing")]
        assert not helpers, f"{path.relative_to(ROOT)} imports {helpers}"


def test_code_shape_targets_hold():
    """No function over 60 lines in the stages and the library, no stage over 350 lines."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "code_shape.py"), "--all"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    mains = {line.split()[0]: int(line.split("main ")[1].split()[0]) for line in done.stdout.splitlines()
             if " main " in line}
    assert set(mains) == {f"{s}.py" for s in STAGES} and max(mains.values()) <= 60, mains


def test_code_shape_finds_a_long_function(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    import code_shape

    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 70, encoding="utf-8")
    assert code_shape.functions(long) == [("f", 1, 71)]
    monkeypatch.setattr(code_shape, "checked_files", lambda: [long])
    monkeypatch.setattr(code_shape, "ROOT", tmp_path)
    assert code_shape.problems() == ["long.py:1 f: 71 lines (> 60)"]


def test_lint_passes():
    ruff = shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (make install puts it in .venv)")
    done = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
