"""The file tree shows the pipeline: only stage scripts at the top, and no script imports another."""
import ast
import subprocess

from conftest import ROOT

STAGES = {"quantize_push", "filter_data", "train", "infer", "judge"}
LIBRARY = {"kit", "prompts", "rag"}


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def tracked(pattern):
    listing = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / name for name in listing.stdout.split()]


def test_only_stage_scripts_at_the_top():
    top = {path.stem for path in tracked("*.py") if path.parent == ROOT}
    assert top and top <= STAGES, top - STAGES


def test_no_script_imports_a_script():
    scripts = [p for p in tracked("*.py") if p.parent == ROOT]
    local = {p.stem for p in scripts} | {"tests", "conftest"}
    for path in scripts + [p for p in tracked("bench/*.py")]:
        ours = set(imported_modules(path)) & (local | LIBRARY | {"corpus", "reference_filter"})
        assert ours <= LIBRARY, f"{path.relative_to(ROOT)} imports {sorted(ours - LIBRARY)}"


def test_library_imports_no_script():
    for path in tracked("kit/*.py") + tracked("rag/*.py") + tracked("prompts/*.py"):
        assert not set(imported_modules(path)) & STAGES, path
