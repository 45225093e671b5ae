"""Function and file lengths by the AST, against the kit's shape targets.

    python tools/code_shape.py            # prints what is over, exit 1 if anything is
    python tools/code_shape.py --all      # every stage script's length and each main()

Targets: no function in the stage scripts, kit/, prompts/ or rag/ over 60 lines; no stage script
over 350 lines; each stage's main() 60 lines or fewer.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("quantize_push.py", "filter_data.py", "train.py", "infer.py", "judge.py")
LIBRARY = ("kit", "prompts", "rag")
MAX_FUNCTION, MAX_SCRIPT = 60, 350


def functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def checked_files() -> list[Path]:
    files = [ROOT / name for name in STAGES]
    for package in LIBRARY:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def problems() -> list[str]:
    found = []
    for path in checked_files():
        relative = path.relative_to(ROOT)
        for name, line, length in functions(path):
            if length > MAX_FUNCTION:
                found.append(f"{relative}:{line} {name}: {length} lines (> {MAX_FUNCTION})")
        if path.name in STAGES:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_SCRIPT:
                found.append(f"{relative}: {lines} lines (> {MAX_SCRIPT})")
    return found


def summary() -> list[str]:
    rows = []
    for name in STAGES:
        path = ROOT / name
        mains = [length for fn, _, length in functions(path) if fn == "main"]
        rows.append(f"{name:<18} {len(path.read_text(encoding='utf-8').splitlines()):>4} lines, "
                    f"main {mains[0] if mains else '-'} lines")
    return rows


if __name__ == "__main__":
    if "--all" in sys.argv[1:]:
        print("\n".join(summary()))
    over = problems()
    print("\n".join(over) if over else "within the targets")
    sys.exit(1 if over else 0)
