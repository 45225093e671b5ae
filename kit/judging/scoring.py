"""Scoring answers with the ELYZA 1-5 rubric, shared by judge.py and `infer.py --judge`.

    settings = JudgeSettings(judge_backend="openai", judge_model="gemini-2.0-flash", base_url=URL)
    summary = score_answers("results/<run>/output.jsonl", tasks, settings, "results/<run>")

Rule flags need no judge; every judgment is cached under the key of everything that determines
it, so a rerun costs nothing and a killed run resumes. scores.jsonl and score.json are written
into the answers' folder (kit.runs.AnswerDir).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from kit.io import KitError, iter_jsonl, write_json, write_jsonl
from kit.judging.backends import make_judge
from kit.judging.flags import rule_flags
from kit.judging.settings import JudgeSettings
from kit.judging.stats import summarize
from kit.runs import AnswerDir, task_key


def read_scores(path: Path) -> dict:
    """{task key: score} from a scores.jsonl; a row without a task_id or with a score that is not a
    number is an error naming its line."""
    scores = {}
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict) or "task_id" not in row:
            raise KitError(f"{path}:{line_no}: not a scores.jsonl row (no task_id)")
        score = row.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                  or not 1 <= score <= 5):
            raise KitError(f"{path}:{line_no}: score must be a number from 1 to 5 or null (got {score!r})")
        scores[task_key(row["task_id"])] = score
    return scores


def judge_fingerprint(settings: JudgeSettings) -> str:
    """Who judges: a local model folder by its config and the size and first MiB of each weight
    file (new weights at the same path are another judge), else the name and the endpoint."""
    folder = Path(settings.judge_model).expanduser()
    digest = hashlib.sha256(f"{settings.judge_backend}|{settings.judge_model}|{settings.base_url}".encode())
    if settings.judge_backend == "hf" and folder.is_dir():
        for path in sorted(folder.glob("*")):
            if path.suffix in (".json", ".safetensors", ".bin", ".model"):
                digest.update(f"{path.name}:{path.stat().st_size}".encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def cache_key(settings: JudgeSettings, fingerprint: str, prompt_hash: str, rendered: str, sample: int) -> str:
    """Everything that changes a judgment: the judge's identity, every load and decoding setting,
    the prompt and which of the repeated samples this is."""
    identity = [fingerprint, settings.record(), settings.max_retries, prompt_hash, rendered, sample]
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


def valid_result(result) -> bool:
    """A judgment worth keeping: a grade 1-5, or an expected value in [1, 5] (never NaN)."""
    if not isinstance(result, dict) or "error" in result:
        return False
    score = result.get("expected", result.get("grade"))
    return isinstance(score, (int, float)) and not isinstance(score, bool) and 1 <= score <= 5


def read_cached(path: Path):
    """A cached judgment, or None: a missing, unreadable or invalid entry is judged again."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {**result, "cached": True} if valid_result(result) else None


def judge_items(items: list[dict], settings: JudgeSettings) -> tuple[list[dict], object]:
    """Judge each item's `prompt` settings.repeats times (cached per sample); returns (one result
    per item, its samples aggregated; the judge made, or None when everything came from the
    cache: no model is loaded then)."""
    from tqdm import tqdm

    cache, fingerprint = Path(settings.cache_dir), judge_fingerprint(settings)
    jobs = [(i, k) for i in range(len(items)) for k in range(settings.repeats)]
    keys = {job: cache_key(settings, fingerprint, items[job[0]]["prompt_hash"], items[job[0]]["prompt"], job[1])
            for job in jobs}
    done = {job: read_cached(cache / keys[job][:2] / f"{keys[job]}.json") for job in jobs}
    todo = [job for job in jobs if done[job] is None]
    judge = None
    if todo:
        judge = make_judge(settings)
        step = settings.judge_batch_size if judge.name == "hf" else max(1, settings.workers) * 4
        with tqdm(total=len(todo), desc="judge", unit="task", file=sys.stderr) as bar:
            for start in range(0, len(todo), step):
                batch = todo[start:start + step]
                for job, result in zip(batch, judge.judge_batch([items[i]["prompt"] for i, _ in batch],
                                                                settings.mode)):
                    done[job] = result
                    if valid_result(result):  # failures are asked again on the next run
                        write_json(cache / keys[job][:2] / f"{keys[job]}.json", result)
                bar.update(len(batch))
    return [aggregate([done[(i, k)] for k in range(settings.repeats)]) for i in range(len(items))], judge


def aggregate(samples: list[dict]) -> dict:
    """One result from a task's samples: the one itself, or for repeats the mean of the grades
    that came back, with every sample kept."""
    if len(samples) == 1:
        return samples[0]
    grades = [s["grade"] for s in samples if valid_result(s)]
    result = {"samples": [s.get("grade") for s in samples], "attempts": sum(s.get("attempts", 0) for s in samples),
              "cached": all(s.get("cached") for s in samples)}
    if grades:
        result["grade"] = round(sum(grades) / len(grades), 4)
    else:
        result["error"] = next((s["error"] for s in samples if "error" in s), "no grade")
    return result


def read_answers(path, tasks: list[dict]) -> list[dict]:
    """output.jsonl rows matched to their tasks by task_id; an `input` that differs from the
    reference's is an error naming the line."""
    by_id = {task_key(t["task_id"]): t for t in tasks}
    answers, seen = [], set()
    for line_no, record in iter_jsonl(path):
        if not isinstance(record, dict) or "task_id" not in record:
            raise KitError(f"{path}:{line_no}: not an object with a task_id")
        key = task_key(record["task_id"])
        if key not in by_id:
            raise KitError(f"{path}:{line_no}: task_id {record['task_id']!r} is not in the task file")
        if key in seen:
            raise KitError(f"{path}:{line_no}: task_id {record['task_id']!r} answered twice")
        seen.add(key)
        if record.get("input") != by_id[key]["input"]:
            from kit.tasks import first_difference

            raise KitError(f"{path}:{line_no}: `input` of task {record['task_id']!r} differs from the task "
                           f"file's ({first_difference(record.get('input'), by_id[key]['input'])}): these "
                           "answers are for other tasks, or one of the two files was edited")
        output = record.get("output")
        if not isinstance(output, str):
            raise KitError(f"{path}:{line_no}: `output` must be a string")
        answers.append({"task": by_id[key], "answer": output})
    return answers


def check_reference_tasks(tasks: list[dict], where) -> None:
    missing = [t for t in tasks if not t.get("output")]
    if missing:
        raise KitError(f"{where}:{missing[0]['line']}: no reference `output` for task "
                       f"{missing[0]['task_id']!r} ({len(missing)} of {len(tasks)} tasks lack one). "
                       "The judge needs reference answers; the kit never scores the leaderboard's "
                       "task file (elyza-tasks-100-TV_0.jsonl), whose use in development is forbidden")


def warn_self_preference(settings: JudgeSettings) -> None:
    if "gemma" in str(settings.judge_model).lower():
        print(f"warning: the judge {settings.judge_model} is from the Gemma family, like the model "
              "being tuned; judges prefer their own family's text", file=sys.stderr)


def judge_rows(entries: list[dict], settings: JudgeSettings) -> tuple[list[dict], dict]:
    """The scoring pipeline over entries {input, reference, eval_aspect, answer[, generation]}:
    rule flags, an empty answer scored 1 without a judge, every other answer judged (cached).
    Returns (one row per entry, what judged them for score.json)."""
    from prompts import load_judge_prompt

    prompt = load_judge_prompt(settings.judge_prompt)
    items, rows = [], []
    for entry in entries:
        text = entry["answer"]
        row = {"answer_chars": len(text), "flags": rule_flags(text, entry["input"], entry.get("generation"))}
        rows.append(row)
        if row["flags"].get("empty"):
            row.update(score=1.0, attempts=0, error=None)  # the rubric: an empty answer scores 1
            continue
        items.append({"row": row, "prompt_hash": prompt.hash, "prompt": prompt.render(
            entry["input"], entry["reference"], entry.get("eval_aspect", ""), text,
            "json" if settings.mode == "json" else "digit")})
    warn_self_preference(settings)
    results, judge = judge_items(items, settings)
    for item, result in zip(items, results):
        score = result.get("expected", result.get("grade"))
        item["row"].update(score=None if score is None else float(score), error=result.get("error"),
                           attempts=result.get("attempts", 0), cached=result.get("cached", False),
                           **{k: result[k] for k in ("expected", "distribution", "digit_mass", "grade", "samples",
                                                     "reply", "logprob_fallback") if k in result})
    return rows, {**settings.record(), "judge_mode": mode_used(settings, results), "prompt": prompt.name,
                  "prompt_hash": prompt.hash, "judge_calls": getattr(judge, "calls", 0) if judge else 0}


def score_line(summary: dict) -> str:
    """score 4.101 (95% interval 3.88-4.32) over 10 tasks, 0 failed"""
    ci = summary.get("ci95")
    score = "not measured" if summary["score"] is None else f"{summary['score']:.3f}"
    interval = f" (95% interval {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
    return f"score {score}{interval} over {summary['n']} tasks, {summary['n_failed']} failed"


def mode_used(settings: JudgeSettings, results: list[dict]) -> str:
    """logprob, unless the endpoint gave no logprobs and replies were parsed instead (digit)."""
    if settings.mode != "logprob":
        return settings.mode
    fallback = sum(bool(r.get("logprob_fallback")) for r in results)
    return "digit" if results and fallback == len(results) else "logprob" if not fallback else "logprob+digit"


def score_answers(answers_path, tasks: list[dict], settings: JudgeSettings, out_dir,
                  tasks_label: str = "") -> dict:
    """Judge every answer and write scores.jsonl and score.json into out_dir; return score.json."""
    check_reference_tasks(tasks, tasks_label or "tasks")
    answers = read_answers(answers_path, tasks)
    if not answers:
        raise KitError(f"{answers_path}: no answers")
    generations = generations_beside(answers_path, out_dir)
    entries = [{"input": a["task"]["input"], "reference": a["task"]["output"],
                "eval_aspect": a["task"].get("eval_aspect", ""), "answer": a["answer"],
                "generation": generations.get(task_key(a["task"]["task_id"]))} for a in answers]
    missing = sum(not a["task"].get("eval_aspect") for a in answers)
    if missing:
        print(f"warning: {missing} task(s) have no eval_aspect (the task's grading notes); they are judged on "
              "the general rubric alone", file=sys.stderr)
    rows, judged = judge_rows(entries, settings)
    rows = [{"task_id": a["task"]["task_id"], **row} for a, row in zip(answers, rows)]
    out = AnswerDir(out_dir)
    write_jsonl(out.scores, rows)
    summary = summarize(rows)
    summary.update(judged, answers=str(answers_path), tasks=tasks_label, n_tasks=len(tasks),
                   n_unanswered=len(tasks) - len(answers))
    overlaps = _overlaps_beside(answers_path, out_dir)
    if overlaps is not None:
        summary["task_overlaps"] = overlaps
    write_json(out.score, summary)
    if summary["n"] == 0:
        raise KitError(f"every judgment failed ({summary['n_failed']} tasks; see {out.scores}): no score")
    return summary


def _sidecar(pick, answers_path, out_dir) -> Path | None:
    """infer.py's file `pick(AnswerDir)`, beside the answers or in the judge's out_dir."""
    folders = (AnswerDir(Path(answers_path).parent), AnswerDir(out_dir))
    return next((pick(folder) for folder in folders if pick(folder).is_file()), None)


def generations_beside(answers_path, out_dir) -> dict:
    """infer.py's generations.jsonl sidecar (new tokens, stop reason per task), when present."""
    path = _sidecar(lambda d: d.generations, answers_path, out_dir)
    if path is None:
        return {}
    answers = str(Path(answers_path).resolve())
    return {task_key(r["task_id"]): r for _, r in iter_jsonl(path, skip_bad_lines=True)
            if isinstance(r, dict) and "task_id" in r and r.get("output_file") == answers}


def _overlaps_beside(answers_path, out_dir):
    from kit.runs import read_json

    path = _sidecar(lambda d: d.infer_metrics, answers_path, out_dir)
    return None if path is None else read_json(path).get("task_overlaps")
