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
from kit.judging.settings import JudgeSettings
from kit.judging.stats import summarize
from kit.runs import AnswerDir, task_key


def rule_flags(answer: str, generation: dict | None = None) -> dict:
    """Things the rubric deducts for that need no judge: share of non-Japanese text, heavy
    repetition, leaked prompt markers, a refusal phrase, an answer cut off at max_new_tokens."""
    from kit.tasks import LEAK_MARKERS
    from kit.text import non_japanese_share, repetition_share
    from prompts import refusal_phrases

    flags = {}
    if not answer.strip():
        return {"empty": True}
    share = non_japanese_share(answer)
    if share >= 0.4:
        flags["non_japanese"] = share
    repeated = repetition_share(answer)
    if repeated >= 0.5:
        flags["repetition"] = repeated
    leaked = [m for m in LEAK_MARKERS if m in answer]
    if leaked:
        flags["leaked_markers"] = leaked
    refusal = next((p for p in refusal_phrases() if p in answer), None)
    if refusal:
        flags["refusal"] = refusal
    if generation and generation.get("stop_reason") == "length":
        flags["truncated"] = generation.get("new_tokens")
    return flags


def cache_key(settings: JudgeSettings, mode: str, prompt_hash: str, rendered: str) -> str:
    decoding = {"temperature": 0, "max_new_tokens": settings.judge_max_new_tokens,
                "max_retries": settings.max_retries}
    identity = [settings.judge_backend, settings.judge_model, settings.base_url, mode, prompt_hash,
                rendered, decoding]
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8",
                                                                          "surrogatepass")).hexdigest()


def judge_items(items: list[dict], settings: JudgeSettings) -> tuple[list[dict], object]:
    """Judge each item's `prompt` (cached); returns (results in order, the judge made, or None when
    everything came from the cache: no model is loaded then)."""
    from tqdm import tqdm

    mode = settings.mode
    cache = Path(settings.cache_dir)
    prompt_hash = items[0]["prompt_hash"] if items else ""
    results, judge = [None] * len(items), None
    todo = []
    for i, item in enumerate(items):
        item["key"] = cache_key(settings, mode, prompt_hash, item["prompt"])
        path = cache / item["key"][:2] / f"{item['key']}.json"
        if path.exists():
            try:
                results[i] = {**json.loads(path.read_text(encoding="utf-8")), "cached": True}
                continue
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # a damaged cache entry is judged again
        todo.append(i)
    if todo:
        judge = make_judge(settings)
        step = settings.judge_batch_size if judge.name == "hf" else max(1, settings.workers) * 4
        with tqdm(total=len(todo), desc="judge", unit="task", file=sys.stderr) as bar:
            for start in range(0, len(todo), step):
                batch = todo[start:start + step]
                for i, result in zip(batch, judge.judge_batch([items[i]["prompt"] for i in batch], mode)):
                    results[i] = result
                    if "error" not in result:  # failures are asked again on the next run
                        path = cache / items[i]["key"][:2] / f"{items[i]['key']}.json"
                        write_json(path, result)
                bar.update(len(batch))
    return results, judge


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
            raise KitError(f"{path}:{line_no}: `input` of task {record['task_id']!r} differs from "
                           "the task file's: these answers are for other tasks")
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


def score_answers(answers_path, tasks: list[dict], settings: JudgeSettings, out_dir,
                  tasks_label: str = "") -> dict:
    """Judge every answer and write scores.jsonl and score.json into out_dir; return score.json."""
    from prompts import load_judge_prompt

    check_reference_tasks(tasks, tasks_label or "tasks")
    answers = read_answers(answers_path, tasks)
    if not answers:
        raise KitError(f"{answers_path}: no answers")
    prompt = load_judge_prompt(settings.judge_prompt)
    mode = settings.mode
    generations = _generations_beside(answers_path, out_dir)
    items, rows = [], []
    for answer in answers:
        task, text = answer["task"], answer["answer"]
        row = {"task_id": task["task_id"], "answer_chars": len(text),
               "flags": rule_flags(text, generations.get(task_key(task["task_id"])))}
        rows.append(row)
        if row["flags"].get("empty"):
            row.update(score=1.0, attempts=0, error=None)  # the rubric: an empty answer scores 1
            continue
        items.append({"row": row, "prompt_hash": prompt.hash,
                      "prompt": prompt.render(task["input"], task["output"], task.get("eval_aspect", ""),
                                              text, "json" if mode == "json" else "digit")})
    warn_self_preference(settings)
    results, judge = judge_items(items, settings)
    for item, result in zip(items, results):
        row = item["row"]
        score = result.get("expected", result.get("grade"))
        row.update(score=None if score is None else float(score), error=result.get("error"),
                   attempts=result.get("attempts", 0), cached=result.get("cached", False),
                   **{k: result[k] for k in ("expected", "distribution", "digit_mass", "grade", "reply",
                                             "logprob_fallback") if k in result})
    out = AnswerDir(out_dir)
    write_jsonl(out.scores, rows)
    summary = summarize(rows)
    summary.update(judge_backend=settings.judge_backend, judge_model=settings.judge_model,
                   judge_mode=mode, prompt=prompt.name, prompt_hash=prompt.hash,
                   answers=str(answers_path), tasks=tasks_label, n_tasks=len(tasks),
                   n_unanswered=len(tasks) - len(answers),
                   judge_calls=getattr(judge, "calls", 0) if judge else 0)
    overlaps = _overlaps_beside(answers_path, out_dir)
    if overlaps is not None:
        summary["task_overlaps"] = overlaps
    write_json(out.score, summary)
    return summary


def _sidecar(pick, answers_path, out_dir) -> Path | None:
    """infer.py's file `pick(AnswerDir)`, beside the answers or in the judge's out_dir."""
    folders = (AnswerDir(Path(answers_path).parent), AnswerDir(out_dir))
    return next((pick(folder) for folder in folders if pick(folder).is_file()), None)


def _generations_beside(answers_path, out_dir) -> dict:
    """infer.py's generations.jsonl sidecar (new tokens, stop reason per task), when present."""
    path = _sidecar(lambda d: d.generations, answers_path, out_dir)
    if path is None:
        return {}
    return {task_key(r["task_id"]): r for _, r in iter_jsonl(path, skip_bad_lines=True)
            if isinstance(r, dict) and "task_id" in r}


def _overlaps_beside(answers_path, out_dir):
    from kit.runs import read_json

    path = _sidecar(lambda d: d.infer_metrics, answers_path, out_dir)
    return None if path is None else read_json(path).get("task_overlaps")
