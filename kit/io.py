"""Errors and files: KitError and run_main (one-line messages), atomic writes, JSONL/JSON/YAML,
and the instruction/response reader every stage shares."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


class KitError(Exception):
    """An error in the user's input or setup; scripts print it without a traceback and exit 2."""


def run_main(main, argv=None) -> None:
    """Call `main(argv)`, turning a KitError into a one-line message and exit status 2."""
    import sys

    try:
        main(argv)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", errors: str = "strict"):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    A crash or an exception inside the block leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, errors=None if "b" in mode else errors) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A lone surrogate can't be UTF-8 encoded; inside a JSON string its escape \udXXX is valid JSON,
# so JSONL files are opened with this error handler and such text round-trips unchanged.
JSONL_ERRORS = "backslashreplace"


def dumps_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSONL (real Japanese, not \\u escapes) atomically; return the count."""
    count = 0
    with atomic_open(path, errors=JSONL_ERRORS) as handle:
        for row in rows:
            handle.write(dumps_line(row))
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, errors=JSONL_ERRORS) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def iter_jsonl(path: str | os.PathLike, skip_bad_lines: bool = False, bad_lines: list | None = None
               ) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, object) for each non-blank line; a UTF-8 BOM is accepted.

    A line that is not valid JSON raises KitError naming file and line, or, with
    `skip_bad_lines`, is appended to `bad_lines` as (line_number, message) and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such file")
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                message = f"{path}:{line_no}: not valid JSON ({err})"
                if not skip_bad_lines:
                    raise KitError(message) from None
                if bad_lines is not None:
                    bad_lines.append((line_no, message))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path)]


def load_yaml(path: str | os.PathLike) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise KitError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def check_keys(given: Iterable[str], valid: Iterable[str], where: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise KitError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: "
                       f"{', '.join(sorted(valid))}")


def pair_from_record(record: Any) -> tuple[str, str] | None:
    """(instruction, response) from a magpie conversation or a flat record; None if it has none.

    Magpie: instruction = first `user` turn, response = first `assistant` turn, "" if absent.
    Flat: `instruction`/`response` or `input`/`output`.
    """
    if not isinstance(record, dict):
        return None
    turns = record.get("conversations")
    if isinstance(turns, list):
        instruction = next((t.get("content") for t in turns
                            if isinstance(t, dict) and t.get("role") == "user"), "")
        response = next((t.get("content") for t in turns
                         if isinstance(t, dict) and t.get("role") == "assistant"), "")
    elif "instruction" in record or "response" in record:
        instruction, response = record.get("instruction", ""), record.get("response", "")
    elif "input" in record or "output" in record:
        instruction, response = record.get("input", ""), record.get("output", "")
    else:
        return None
    instruction = "" if instruction is None else instruction
    response = "" if response is None else response
    if not isinstance(instruction, str) or not isinstance(response, str):
        return None
    if not instruction and not response:
        return None
    return instruction, response



def read_pairs(path) -> list[dict]:
    """{instruction, response, context} per record of a QA JSONL file (instruction/response or
    input/output); a record missing either, or an empty file, is an error naming file and line."""
    rows = []
    for line_no, record in iter_jsonl(path):
        pair = pair_from_record(record)
        if pair is None or not pair[0].strip() or not pair[1].strip():
            raise KitError(f"{path}:{line_no}: record needs a non-empty instruction/response "
                           "(or input/output)")
        context = record.get("context") if isinstance(record.get("context"), str) else None
        rows.append({"instruction": pair[0], "response": pair[1], "context": context})
    if not rows:
        raise KitError(f"{path}: no records")
    return rows
