"""The competition's files: task files (JSONL, CSV, parquet, a Hub dataset), the output.jsonl
validator, and the guard against task inputs repeated in development data."""
from __future__ import annotations

import json
from pathlib import Path

from kit.io import KitError
from kit.readers import read_records
from kit.runs import task_key

# Text that must never reach a submitted answer: prompt markers of every shipped template and
# the few-shot header.
LEAK_MARKERS = ("### 質問", "### 回答", "### 指示", "### Instruction", "### Response", "### Context",
                "<start_of_turn>", "<end_of_turn>", "質問・文章をよく読んで")


TASK_FIELDS = ("input", "output", "eval_aspect")  # output/eval_aspect: reference answer, grading notes


def load_tasks(path) -> list[dict]:
    """Tasks with `task_id` and `input` (plus `output`/`eval_aspect` where the file has them), in
    file order, each with `line` (where it starts).

    JSONL (elyza-tasks-100-TV_0.jsonl), CSV, parquet, or a Hub dataset name (split `test`, as
    elyza/ELYZA-tasks-100). Rows without `task_id` are numbered from 0 in file order, so the
    public ELYZA-tasks-100 (which has none) is answered and judged under the same ids.
    JSONL records may be broken over several lines (lines are accumulated until the text ends
    with `}` and parses, as the organisers' loader did); a UTF-8 BOM and blank lines are fine.
    """
    rows = read_records(path, split="test", broken_lines=True)
    tasks, seen = [], {}
    with_id = sum(isinstance(record, dict) and "task_id" in record for _, record in rows)
    if with_id not in (0, len(rows)):
        first = next(line for line, record in rows if "task_id" not in record)
        raise KitError(f"{path}:{first}: record has no `task_id` while others do")
    for number, (line, record) in enumerate(rows):
        if not isinstance(record, dict) or not isinstance(record.get("input"), str):
            raise KitError(f"{path}:{line}: task record needs a string `input`")
        task_id = record["task_id"] if with_id else number
        key = task_key(task_id)
        if key in seen:
            raise KitError(f"{path}:{line}: duplicate task_id {task_id!r} (first at line {seen[key]})")
        seen[key] = line
        task = {"task_id": task_id, "line": line}
        task.update({k: record[k] for k in TASK_FIELDS if isinstance(record.get(k), str)})
        tasks.append(task)
    if not tasks:
        raise KitError(f"{path}: no tasks")
    return tasks


def first_difference(given: str, expected: str, context: int = 12) -> str:
    """Where two texts part, shown: `at character 7: "…ができる" vs "…ができ\\r"`."""
    given, expected = str(given), str(expected)
    at = next((i for i, (a, b) in enumerate(zip(given, expected)) if a != b), min(len(given), len(expected)))
    show = lambda text: json.dumps(("…" if at > context else "") + text[max(0, at - context):at + context],
                                   ensure_ascii=False)
    return f"at character {at}: {show(given)} vs the task file's {show(expected)}"


def _reject_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def validate_output(tasks_path, output_path, markers=LEAK_MARKERS) -> list[str]:
    """Every problem of a submission file, each naming its line; an empty list means valid."""
    tasks = load_tasks(tasks_path)
    by_id = {task_key(t["task_id"]): t for t in tasks}
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
            record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as err:
            problems.append(f"{where}: not valid UTF-8 ({err.reason})")
            continue
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg})")
            continue
        if not isinstance(record, dict) or "task_id" not in record:
            problems.append(f"{where}: not an object with a task_id")
            continue
        key = task_key(record["task_id"])
        if key not in by_id:
            problems.append(f"{where}: task_id {record['task_id']!r} is not in {tasks_path}")
            continue
        if key in seen:
            problems.append(f"{where}: task_id {record['task_id']!r} again (first at line {seen[key]})")
            continue
        seen[key] = line_no
        if record.get("input") != by_id[key]["input"]:
            problems.append(f"{where}: `input` differs from the task file's (task {record['task_id']!r}, "
                            f"{first_difference(record.get('input'), by_id[key]['input'])})")
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


GARBLED_SHARE = 0.5  # an answer at least this much U+FFFD is bytes no tokenizer could decode


def garbled_answers(output_path) -> list:
    """Task ids whose answer is mostly U+FFFD (a random or broken model's output): valid JSON,
    useless as an answer."""
    from kit.io import iter_jsonl

    found = []
    for _, record in iter_jsonl(output_path, skip_bad_lines=True):
        text = "".join(str(record.get("output", "")).split()) if isinstance(record, dict) else ""
        if text and text.count("\ufffd") / len(text) >= GARBLED_SHARE:
            found.append(record.get("task_id"))
    return found


def garbled_warning(output_path) -> str | None:
    ids = garbled_answers(output_path)
    if not ids:
        return None
    shown = ", ".join(map(repr, ids[:10])) + (" ..." if len(ids) > 10 else "")
    return (f"warning: {len(ids)} answer(s) are mostly U+FFFD, the replacement character for bytes that "
            f"decode to nothing (a random or broken model): tasks {shown}")


OVERLAP_CHARS = 40  # a shared span this long (after NFKC, whitespace removed) counts as a repeat


def _normalized(text: str) -> str:
    import unicodedata

    return "".join(unicodedata.normalize("NFKC", text).split())


def find_overlaps(tasks: list[dict], texts, span: int = OVERLAP_CHARS, shortest: int = 20) -> list[dict]:
    """Tasks whose input shares a span of >= `span` characters (the whole input, for a task shorter
    than that but at least `shortest` long) with one of `texts`, an iterable of (source, text)
    such as few-shot references or training records; one hit per task and source.

    Every window of half that length of each task is indexed; the texts are read at a stride of
    the shortest window, which finds every such span (a 100 MB corpus takes seconds).
    """
    index = {}  # window length → {window text: task_id}
    for task in tasks:
        text = _normalized(task["input"])
        if len(text) < shortest:
            continue
        window = min(span, len(text)) // 2
        windows = index.setdefault(window, {})
        for i in range(len(text) - window + 1):
            windows.setdefault(text[i:i + window], task["task_id"])
    if not index:
        return []
    stride = min(index)
    hits, seen = [], set()
    for source, text in texts:
        text = _normalized(text)
        for i in range(0, len(text) - stride + 1, stride):
            for window, windows in index.items():
                task_id = windows.get(text[i:i + window])
                if task_id is not None and (task_id, source) not in seen:
                    seen.add((task_id, source))
                    hits.append({"task_id": task_id, "source": source, "text": text[i:i + window]})
    return hits


def report_overlaps(tasks: list[dict], reference_path, references: list[dict], data_files) -> list[dict]:
    """Rules guard: a few-shot reference or training record that repeats a task's input (a long
    shared span) means the task file leaked into development, which the rules forbid. Warns
    (the first five) and returns every hit."""
    import sys

    from kit.io import read_pairs

    sources = [(f"{reference_path} record {i + 1}", r["input"] + "\n" + r["output"]) for i, r in enumerate(references)]
    for name in data_files or []:
        if Path(name).is_file():
            sources += [(f"{name} record {i + 1}", r["instruction"] + "\n" + r["response"])
                        for i, r in enumerate(read_pairs(name))]
    overlaps = find_overlaps(tasks, sources)
    for hit in overlaps[:5]:
        print(f"warning: task {hit['task_id']!r} shares {OVERLAP_CHARS}+ characters (or its whole input) "
              f"with {hit['source']} ({hit['text']}...): using the task file in development is "
              "forbidden", file=sys.stderr)
    if len(overlaps) > 5:
        print(f"warning: {len(overlaps)} overlaps in all (infer_metrics.json lists them)", file=sys.stderr)
    return overlaps
