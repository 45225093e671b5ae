"""Records from a file or a Hub dataset, one reader for every stage: JSONL (one record per line,
or, for task files, records broken over lines), a JSON array, parquet, CSV, or a Hub dataset
name. Each record comes with the line (or row) it starts on, for errors that name it."""
from __future__ import annotations

import json
import re
from pathlib import Path

from kit.io import KitError, iter_jsonl

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def looks_like_hub_name(name: str) -> bool:
    """`owner/dataset`: one slash, no file suffix, not a relative or absolute path."""
    return (str(name).count("/") == 1 and not str(name).startswith((".", "/", "~"))
            and Path(name).suffix.lower() not in SUFFIXES)


def read_records(path, split: str = "train", broken_lines: bool = False) -> list[tuple[int, dict]]:
    """[(line or row number, record)] of a local file or a Hub dataset's split.

    broken_lines: a JSONL record may span lines (lines are joined until the text ends with `}`
    and parses), as the organisers' task loader allowed."""
    local = Path(path).expanduser()
    if not local.exists():
        if looks_like_hub_name(str(path)):
            return hub_rows(str(path), split)
        raise KitError(f"{path}: no such file")
    if local.is_dir():
        raise KitError(f"{path}: a folder, not a data file (give a .jsonl, .json, .parquet or .csv file, "
                       "or a Hub dataset name)")
    suffix = local.suffix.lower()
    if suffix == ".csv":
        return csv_rows(local)
    if suffix == ".parquet":
        return parquet_rows(local)
    if suffix == ".json":
        return json_rows(local)
    return jsonl_rows(local, broken_lines)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None


def jsonl_rows(path: Path, broken_lines: bool = False) -> list[tuple[int, dict]]:
    """One record per line (kit.io.iter_jsonl), or with broken_lines, records that may span lines:
    lines are joined until the text ends with `}` and parses. Lines are split on "\\n" only:
    U+2028, U+0085 and the like inside a value are text."""
    if not broken_lines:
        return list(iter_jsonl(path))
    rows, buffer, start = [], [], 0
    for line_no, line in enumerate(read_text(path).split("\n"), 1):
        line = line.removesuffix("\r")
        if not buffer and not line.strip():
            continue
        if not buffer:
            start = line_no
            if line.lstrip().startswith("["):
                raise KitError(f"{path}:{line_no}: a JSON array, not JSONL (one object per line)")
        buffer.append(line)
        if not line.rstrip().endswith("}"):
            continue
        try:
            rows.append((start, json.loads("\n".join(buffer), strict=False)))
            buffer = []
        except json.JSONDecodeError:
            continue  # a `}` inside a string at the end of a line: keep joining
    if buffer:
        try:
            json.loads("\n".join(buffer), strict=False)
        except json.JSONDecodeError as err:
            raise KitError(f"{path}:{start}: record is not valid JSON ({err.msg})") from None
        raise KitError(f"{path}:{start}: record never closes with `}}`")
    return rows


def json_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise KitError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    data = data if isinstance(data, list) else [data]
    return [(i + 1, record) for i, record in enumerate(data)]


def parquet_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow's errors for a damaged file vary by damage
        raise KitError(f"{path}: not a readable parquet file ({type(err).__name__}: {str(err)[:200]})") from None
    return [(i + 1, clean_cells(record)) for i, record in enumerate(records)]


def csv_rows(path: Path) -> list[tuple[int, dict]]:
    """Rows with the file line each record starts on; CR and CRLF inside cells become LF (a
    spreadsheet's line ends), so a cell equals the same text read from JSONL."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True)
    rows, first = [], 2  # line 1 is the header
    try:
        for record in reader:
            cells = {k: v.replace("\r\n", "\n").replace("\r", "\n") if isinstance(v, str) else v
                     for k, v in record.items()}
            rows.append((first, clean_cells(cells)))
            first = reader.line_num + 1
    except csv.Error as err:
        raise KitError(f"{path}:{first}: not valid CSV ({err})") from None
    return rows


def hub_rows(name: str, split: str) -> list[tuple[int, dict]]:
    try:
        import datasets

        records = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown name, no such split: all the user's to fix
        raise KitError(f"{name}: not a local file, and the Hub dataset could not be loaded "
                       f"({type(err).__name__}: {str(err)[:300]})") from None
    return [(i + 1, clean_cells(dict(record))) for i, record in enumerate(records)]


def clean_cells(record: dict) -> dict:
    """Table cells: empty ones dropped, numpy arrays as lists, a numeric task_id as int."""
    row = {}
    for key, value in record.items():
        if key is None or value is None or value == "" and key == "task_id":
            continue
        row[key] = value.tolist() if hasattr(value, "tolist") else value
    task_id = row.get("task_id")
    if isinstance(task_id, str) and re.fullmatch(r"-?[0-9]+", task_id.strip()):  # not "²" or "--1"
        row["task_id"] = int(task_id)
    return row
