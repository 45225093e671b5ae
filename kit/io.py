"""Errors and files: KitError and run_main (one-line messages), atomic writes, JSONL/JSON/YAML,
and the instruction/response reader every stage shares."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class KitError(Exception):
    """An error in the user's input or setup; scripts print it without a traceback and exit 2."""


def run_main(main, argv=None, resume_flag: str | None = None, resume_note: str | None = None) -> None:
    """Call `main(argv)` as a command: a KitError is one line and exit status 2; Ctrl-C is one line
    (with how to resume, for a script that can: the flag to add, or a note) and 130; a closed pipe
    (`| head`) is silent."""
    import shlex
    import sys

    try:
        main(argv)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        message = "interrupted"
        if resume_flag:
            args = sys.argv[:] + ([] if resume_flag in sys.argv else [resume_flag])
            message += f"; finished work is saved. Resume with: python {shlex.join(args)}"
        elif resume_note:
            message += f"; {resume_note}"
        print(f"\n{message}", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(0) from None
    except (OSError, RuntimeError) as err:
        message = disk_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def disk_message(err: BaseException) -> str | None:
    """One line for a full disk or a folder the process may not write, else None. torch reports a
    full disk while saving a checkpoint as `unexpected pos` / `PytorchStreamWriter failed`."""
    import errno
    import shutil

    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or any(
            text in str(err) for text in ("unexpected pos", "PytorchStreamWriter failed", "No space left")):
        free = shutil.disk_usage(getattr(err, "filename", None) and os.path.dirname(err.filename) or ".").free
        return (f"no space left on the device{where} ({free / 2**30:.1f} GiB free now): free some space and "
                "rerun; finished files are kept (train resumes with --resume_from_checkpoint true)")
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write{where}: {err.strerror} (a read-only folder?); choose an output folder you can write"
    return None


def partial_path(path: str | os.PathLike) -> Path:
    """Where a folder is built until it is complete: `.<name>.partial` beside it (quantize_push's
    staging); a run killed mid-build leaves it, and the next run replaces it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_partials(path: Path) -> None:
    """Remove `.<name>.partial` and `.<name>.<pid>-<n>.partial` files that no live writer owns."""
    for leftover in path.parent.glob(f".{path.name}.*partial"):
        owner = leftover.name[len(path.name) + 2:].split("-")[0].split(".")[0]
        if not owner.isdigit() or not _alive(int(owner)):
            leftover.unlink(missing_ok=True)


_writes = iter(range(1 << 62))


def lock_path(path) -> Path:
    path = Path(path)
    return path / ".lock" if path.is_dir() else path.with_name(f".{path.name}.lock")


@contextmanager
def hold(path, what: str):
    """One process at a time on a run folder or an output: a lock file names the holder's pid.
    Another live holder is an error; the lock of a process that is gone is taken over."""
    import sys

    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text(encoding="utf-8").split()[0])
            except (OSError, ValueError, IndexError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise KitError(f"{path} is in use by process {holder} ({what}); wait for it to finish, "
                               f"or stop it (its lock: {lock})") from None
            print(f"note: {lock} was left by process {holder or '?'}, which is gone; taking it over", file=sys.stderr)
            lock.unlink(missing_ok=True)
            continue
        os.write(handle, f"{os.getpid()} {what}\n".encode())
        os.close(handle)
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", errors: str = "strict"):
    """Write to `.<name>.<pid>-<n>.partial` beside `path`; rename it over `path` only if the block
    succeeds. Each writer has its own temporary file (two processes writing one path never
    share one); what a killed writer left is cleared by the next write. Files get the umask's mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_partials(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_writes)}.partial")
    try:
        encoding = None if "b" in mode else "utf-8"
        with open(tmp, mode, encoding=encoding, errors=None if "b" in mode else errors) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(path: str | os.PathLike, inputs: dict, flag: str = "--output",
                 folder: bool = False) -> Path:
    """Refuse, before any work, an output that is, contains or lies inside one of `inputs`
    ({flag: path}), a file output that is a folder, and a parent that is a file or not writable."""
    out = Path(path).expanduser().resolve()
    for name, value in inputs.items():
        if not value or not Path(value).expanduser().exists():
            continue
        source = Path(value).expanduser().resolve()
        relation = ("is" if out == source else "contains" if out in source.parents
                    else "lies inside" if source in out.parents else None)
        if relation:
            raise KitError(f"{flag} {path} {relation} {name} {value}: refusing to write over an input")
    if out.is_dir() and not folder:
        raise KitError(f"{flag} {path} is a folder; give a file name")
    if out.exists() and folder and not out.is_dir():
        raise KitError(f"{flag} {path} is a file; give a folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise KitError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise KitError(f"{flag} {path}: {parent} is not writable")
    return out


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
                record = json.loads(raw)
                if isinstance(record, list):
                    raise json.JSONDecodeError("a JSON array, not JSONL (one object per line)", "", 0)
                yield line_no, record
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                message = f"{path}:{line_no}: not valid JSON ({err})"
                if raw.lstrip().startswith(b"[") and not skip_bad_lines:
                    message = f"{path}:{line_no}: a JSON array, not JSONL (one object per line)"
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
    except UnicodeDecodeError as err:
        raise KitError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise KitError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def did_you_mean(names, valid) -> str:
    """`name (did you mean closest, next)` for each unknown name, joined by "; "."""
    import difflib

    return "; ".join(f"{k} (did you mean {', '.join(difflib.get_close_matches(k, valid, 2)) or '?'})"
                     for k in names)


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
