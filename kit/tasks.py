"""The competition's files: the task loader for elyza-tasks JSONL and the output.jsonl validator."""
from __future__ import annotations

import json
from pathlib import Path

from kit.io import KitError

# Text that must never reach a submitted answer: prompt markers of every shipped template and
# the few-shot header.
LEAK_MARKERS = ("### 質問", "### 回答", "### 指示", "### Instruction", "### Response", "### Context",
                "<start_of_turn>", "<end_of_turn>", "質問・文章をよく読んで")


def load_tasks(path) -> list[dict]:
    """Tasks with `task_id` and `input`, in file order, each with `line` (where it starts).

    Accepts one record per line and records broken over several lines (lines are accumulated
    until the text ends with `}` and parses, as the organisers' loader did; raw newlines inside
    strings are kept), a UTF-8 BOM and blank lines.
    """
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such task file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 ({err})") from None
    tasks, buffer, start, seen = [], [], 0, {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not buffer and not line.strip():
            continue
        if not buffer:
            start = line_no
        buffer.append(line)
        joined = "\n".join(buffer)
        if not joined.rstrip().endswith("}"):
            continue
        try:
            record = json.loads(joined, strict=False)
        except json.JSONDecodeError:
            continue  # a `}` inside a string at the end of a line: keep accumulating
        buffer = []
        if not isinstance(record, dict) or not isinstance(record.get("input"), str):
            raise KitError(f"{path}:{start}: task record needs a string `input`")
        if "task_id" not in record:
            raise KitError(f"{path}:{start}: task record needs a `task_id`")
        key = json.dumps(record["task_id"])
        if key in seen:
            raise KitError(f"{path}:{start}: duplicate task_id {record['task_id']!r} "
                           f"(first at line {seen[key]})")
        seen[key] = start
        tasks.append({"task_id": record["task_id"], "input": record["input"], "line": start})
    if buffer:
        try:
            json.loads("\n".join(buffer), strict=False)
        except json.JSONDecodeError as err:
            raise KitError(f"{path}:{start}: record is not valid JSON ({err.msg})") from None
        raise KitError(f"{path}:{start}: record never closes with `}}`")
    if not tasks:
        raise KitError(f"{path}: no tasks")
    return tasks


def validate_output(tasks_path, output_path, markers=LEAK_MARKERS) -> list[str]:
    """Every problem of a submission file, each naming its line; an empty list means valid."""
    tasks = load_tasks(tasks_path)
    by_id = {json.dumps(t["task_id"]): t for t in tasks}
    output_path = Path(output_path)
    if not output_path.is_file():
        return [f"{output_path}: no such output file"]
    problems, seen = [], {}
    raw_lines = output_path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for line_no, raw in enumerate(raw_lines, 1):
        where = f"{output_path}:{line_no}"
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            problems.append(f"{where}: not valid UTF-8 ({err.reason})")
            continue
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg})")
            continue
        if not isinstance(record, dict) or "task_id" not in record:
            problems.append(f"{where}: not an object with a task_id")
            continue
        key = json.dumps(record["task_id"])
        if key not in by_id:
            problems.append(f"{where}: task_id {record['task_id']!r} is not in {tasks_path}")
            continue
        if key in seen:
            problems.append(f"{where}: task_id {record['task_id']!r} again (first at line {seen[key]})")
            continue
        seen[key] = line_no
        if record.get("input") != by_id[key]["input"]:
            problems.append(f"{where}: `input` differs from the task file's (task {record['task_id']!r})")
        output = record.get("output")
        if not isinstance(output, str) or not output.strip():
            problems.append(f"{where}: `output` must be a non-empty string")
            continue
        leaked = [m for m in markers if m in output]
        if leaked:
            problems.append(f"{where}: output leaks prompt markers {leaked}")
    missing = [t for key, t in by_id.items() if key not in seen]
    for task in missing:
        problems.append(f"{output_path}: task_id {task['task_id']!r} (task file line {task['line']}) "
                        "has no output")
    if len(seen) != len(tasks) and not missing:
        problems.append(f"{output_path}: {len(seen)} answers for {len(tasks)} tasks")
    return problems
