"""Scoring answers with the ELYZA 1-5 rubric, shared by judge.py and `infer.py --judge`.

    settings = JudgeSettings(judge_backend="openai", judge_model="gemini-2.0-flash", base_url=URL)
    summary = score_answers("results/<run>/output.jsonl", tasks, settings, "results/<run>")

Two backends: `hf` (a local causal LM through the kit's loader) and `openai` (any
OpenAI-compatible chat endpoint). Modes: `logprob` scores the expected value of the judge's
next-token distribution over "1".."5" (G-Eval style, no parse failures); `digit` and `json`
parse a reply and re-ask on failure. Every judgment is cached under the key of everything that
determines it, so a rerun costs nothing and a killed run resumes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from kit.io import KitError, did_you_mean, iter_jsonl, write_json, write_jsonl

BACKENDS = ("hf", "openai")
MODES = ("auto", "logprob", "digit", "json")
DIGITS = ("1", "2", "3", "4", "5")
NETWORK_RETRIES = 6  # 429 / 5xx / timeouts / connection errors, per request
KEY_VARIABLES = ("JUDGE_API_KEY", "OPENAI_API_KEY")


@dataclass
class JudgeSettings:
    """judge.py's flags, also the keys of a judge config file (`infer.py --judge CONFIG`)."""
    judge_backend: str = "hf"  # hf | openai
    judge_model: str | None = None  # hf: a model folder or hub name; openai: the served model's name
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1 for `vllm serve`
    judge_mode: str = "auto"  # auto: logprob where the backend can, else digit
    judge_prompt: str = "judge_elyza"  # prompts/<name>.jinja
    workers: int = 4  # openai: requests in flight
    max_retries: int = 3  # re-asks after an unparsable reply, then the task is recorded as failed
    judge_timeout: float = 120.0  # openai: seconds per request
    backoff_s: float = 1.0  # openai: first retry delay; doubles per retry, with jitter
    judge_batch_size: int = 4  # hf: prompts per forward pass
    judge_load_in_4bit: bool = False  # hf: nf4 judge weights
    judge_max_new_tokens: int = 256  # digit/json replies
    cache_dir: str = "results/.cache/judge"

    @classmethod
    def from_mapping(cls, data: dict, where: str, ignore=()) -> "JudgeSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - set(ignore))
        if unknown:
            raise KitError(f"{where}: unknown judge key(s): {did_you_mean(unknown, known)}")
        settings = cls(**{k: v for k, v in data.items() if k in known})
        settings.check(where)
        return settings

    def check(self, where: str = "judge settings") -> None:
        """Everything that can be wrong before a judge loads or a request goes out."""
        if self.judge_backend not in BACKENDS:
            raise KitError(f"{where}: judge_backend must be one of {', '.join(BACKENDS)}")
        if self.judge_mode not in MODES:
            raise KitError(f"{where}: judge_mode must be one of {', '.join(MODES)}")
        if not self.judge_model:
            raise KitError(f"{where}: judge_model is required (a model folder/name, or the served "
                           "model's name for the openai backend)")
        if self.judge_backend == "openai" and not self.base_url:
            raise KitError(f"{where}: the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        for name in ("workers", "judge_batch_size", "judge_max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise KitError(f"{where}: {name} must be a positive integer")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise KitError(f"{where}: max_retries must be 0 or more")
        if not self.judge_timeout > 0 or not self.backoff_s >= 0:
            raise KitError(f"{where}: judge_timeout must be > 0 and backoff_s >= 0")
        from prompts import TemplateError, load_judge_prompt

        try:
            load_judge_prompt(self.judge_prompt)
        except TemplateError as err:
            raise KitError(f"{where}: {err}") from None

    def resolved_mode(self) -> str:
        return "logprob" if self.judge_mode == "auto" else self.judge_mode


def add_arguments(parser) -> None:
    """judge.py's flags, one per JudgeSettings field, with its default and comment as help."""
    defaults = JudgeSettings()
    for f in fields(JudgeSettings):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(f"--{f.name}", action="store_true")
        else:
            choices = {"judge_backend": BACKENDS, "judge_mode": MODES}.get(f.name)
            parser.add_argument(f"--{f.name}", type=str if default is None else type(default),
                                default=default, choices=choices, help=f"default: {default}")


def settings_from_args(args) -> JudgeSettings:
    settings = JudgeSettings(**{f.name: getattr(args, f.name) for f in fields(JudgeSettings)})
    settings.check("judge.py")
    return settings


# ---- what a program can see without a judge ----------------------------------------------

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


# ---- reading a reply -----------------------------------------------------------------------

def parse_grade(reply: str, mode: str) -> int | None:
    """json: the `grade` of the last JSON object in the reply; digit: the last lone 1-5."""
    if mode == "json":
        for match in reversed(list(re.finditer(r"\{[^{}]*\}", reply or ""))):
            try:
                grade = json.loads(match.group(0)).get("grade")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(grade, (int, str)) and str(grade).strip() in DIGITS:
                return int(str(grade).strip())
        return None
    digits = re.findall(r"(?<![0-9])[1-5](?![0-9])", reply or "")
    return int(digits[-1]) if digits else None


def distribution_from_probs(probs: dict[str, float]) -> dict | None:
    """{distribution, expected, digit_mass} from the judge's probabilities of "1".."5"."""
    mass = sum(probs.get(d, 0.0) for d in DIGITS)
    if mass <= 0:
        return None
    distribution = {d: probs.get(d, 0.0) / mass for d in DIGITS}
    expected = sum(int(d) * p for d, p in distribution.items())
    return {"distribution": {d: round(p, 6) for d, p in distribution.items()},
            "expected": round(expected, 6), "digit_mass": round(mass, 6)}


# ---- backends ------------------------------------------------------------------------------

class HFJudge:
    """A local causal LM: one forward pass per batch in logprob mode, generation otherwise."""
    name = "hf"
    supports_logprob = True

    def __init__(self, settings: JudgeSettings):
        from kit.models import load_for_generation

        self.settings = settings
        self.model, self.tokenizer = load_for_generation(settings.judge_model, None, "hf",
                                                         settings.judge_load_in_4bit)
        self.digit_ids = []
        for digit in DIGITS:
            ids = self.tokenizer.encode(digit, add_special_tokens=False)
            if len(ids) != 1:
                raise KitError(f"{settings.judge_model}: the judge's tokenizer spells {digit!r} with "
                               f"{len(ids)} tokens; use --judge_mode digit")
            self.digit_ids.append(ids[0])
        self.calls = 0

    def chat(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      tokenize=False, add_generation_prompt=True)
        return prompt

    def judge_batch(self, prompts: list[str], mode: str) -> list[dict]:
        import torch

        self.calls += 1
        texts = [self.chat(p) for p in prompts]
        if mode == "logprob":
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.model.device)
            with torch.no_grad():
                logits = self.model(**encoded).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)[:, self.digit_ids].tolist()
            return [{**distribution_from_probs(dict(zip(DIGITS, row))), "attempts": 1} for row in probs]
        from kit.generation import Sampling, generate_batch

        results = [None] * len(prompts)
        pending = list(range(len(prompts)))
        for attempt in range(1, self.settings.max_retries + 2):
            # greedy first; a re-ask samples, since greedy would repeat the same reply
            sampling = Sampling(max_new_tokens=self.settings.judge_max_new_tokens,
                                do_sample=attempt > 1, temperature=0.7)
            replies = generate_batch(self.model, self.tokenizer, [texts[i] for i in pending], sampling)
            still = []
            for i, reply in zip(pending, replies):
                grade = parse_grade(reply.text, mode)
                results[i] = {"grade": grade, "reply": reply.text, "attempts": attempt}
                if grade is None:
                    still.append(i)
            pending = still
            if not pending:
                break
        for i in pending:
            results[i]["error"] = f"no grade in the reply after {results[i]['attempts']} attempts"
        return results


class OpenAIJudge:
    """Any OpenAI-compatible chat endpoint; the key comes from JUDGE_API_KEY or OPENAI_API_KEY."""
    name = "openai"
    supports_logprob = True  # asked for; a server that gives none falls back to parsing

    def __init__(self, settings: JudgeSettings):
        from openai import OpenAI

        self.settings = settings
        self.key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
        # the client's own retries are off: ours count attempts and honour Retry-After
        self.client = OpenAI(base_url=settings.base_url, api_key=self.key or "not-needed",
                             max_retries=0, timeout=settings.judge_timeout)
        self.lock = threading.Lock()
        self.stopped = threading.Event()  # set on a refused request: nothing more is sent
        self.reached = threading.Event()  # set once any request got an answer
        self.calls = 0

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def request(self, prompt: str, mode: str):
        """One completion, retried on 429/5xx/timeouts/connection errors: (response, requests)."""
        import openai

        extra = dict(max_tokens=1, logprobs=True, top_logprobs=20) if mode == "logprob" else dict(
            max_tokens=self.settings.judge_max_new_tokens)
        for attempt in range(1, NETWORK_RETRIES + 2):
            if self.stopped.is_set():
                raise TransientFailure("not sent: the endpoint refused an earlier request", attempt - 1)
            with self.lock:
                self.calls += 1
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.judge_model, temperature=0,
                    messages=[{"role": "user", "content": prompt}], **extra)
                self.reached.set()
                return response, attempt
            except (openai.BadRequestError, openai.AuthenticationError,
                    openai.PermissionDeniedError, openai.NotFoundError) as err:
                self.stopped.set()
                raise KitError(f"judge endpoint {self.settings.base_url} refused the request "
                               f"({err.status_code} {type(err).__name__}): "
                               f"{self.redact(str(err))[:300]}") from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError, openai.APIStatusError) as err:
                status = getattr(err, "status_code", None)
                unreachable = (isinstance(err, openai.APIConnectionError)
                               and not isinstance(err, openai.APITimeoutError))
                if unreachable and not self.reached.is_set() and attempt >= 3:
                    self.stopped.set()  # a server that never answered: say so now, not in an hour
                    raise KitError(f"cannot reach the judge endpoint {self.settings.base_url} "
                                   f"({self.redact(str(err))[:200]}); is the server running?") from None
                if isinstance(err, openai.APIStatusError) and status < 500 and status != 429:
                    self.stopped.set()
                    raise KitError(f"judge endpoint {self.settings.base_url} answered {status} "
                                   f"({self.redact(str(err))[:300]})") from None
                if attempt > NETWORK_RETRIES:
                    raise TransientFailure(f"{type(err).__name__} after {attempt} requests", attempt)
                delay = self.settings.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                response = getattr(err, "response", None)
                retry_after = response.headers.get("retry-after") if response is not None else None
                if retry_after:
                    try:
                        delay = max(delay, float(retry_after))
                    except ValueError:
                        pass
                time.sleep(min(delay, 60.0))

    def judge_one(self, prompt: str, mode: str) -> dict:
        attempts, last_reply = 0, None
        for _ in range(self.settings.max_retries + 1):
            try:
                response, requests = self.request(prompt, mode)
            except TransientFailure as failure:
                return {"attempts": attempts + failure.requests, "error": str(failure)}
            attempts += requests
            reply, top = _reply_and_top_logprobs(response)
            last_reply = reply
            if mode == "logprob" and top:
                probs = {}
                for token, logprob in top:
                    if token.strip() in DIGITS:
                        probs[token.strip()] = probs.get(token.strip(), 0.0) + math.exp(logprob)
                scored = distribution_from_probs(probs)
                if scored:
                    return {**scored, "reply": reply, "attempts": attempts}
            grade = parse_grade(reply, "json" if mode == "json" else "digit") if reply else None
            if grade is not None:
                return {"grade": grade, "reply": reply, "attempts": attempts,
                        **({"logprob_fallback": True} if mode == "logprob" else {})}
        return {"reply": last_reply, "attempts": attempts,
                "error": f"no grade in the reply after {attempts} requests"}

    def judge_batch(self, prompts: list[str], mode: str) -> list[dict]:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=self.settings.workers)
        futures = [pool.submit(self.judge_one, prompt, mode) for prompt in prompts]
        try:
            results = [future.result() for future in futures]
        except BaseException:  # a refused request or Ctrl-C: send nothing more, wait for nothing
            self.stopped.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results


class TransientFailure(Exception):
    def __init__(self, message: str, requests: int):
        super().__init__(message)
        self.requests = requests


def _reply_and_top_logprobs(response) -> tuple[str | None, list]:
    """The reply text and [(token, logprob)] of its first token; (None, []) for a malformed reply."""
    try:
        choice = response.choices[0]
        reply = choice.message.content
    except (AttributeError, IndexError, TypeError):
        return None, []
    top = []
    try:
        first = choice.logprobs.content[0]
        top = [(t.token, t.logprob) for t in first.top_logprobs] or [(first.token, first.logprob)]
    except (AttributeError, IndexError, TypeError):
        pass
    return reply if isinstance(reply, str) else None, top


def make_judge(settings: JudgeSettings):
    return OpenAIJudge(settings) if settings.judge_backend == "openai" else HFJudge(settings)


# ---- the run -------------------------------------------------------------------------------

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

    mode = settings.resolved_mode()
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
    by_id = {json.dumps(t["task_id"]): t for t in tasks}
    answers, seen = [], set()
    for line_no, record in iter_jsonl(path):
        if not isinstance(record, dict) or "task_id" not in record:
            raise KitError(f"{path}:{line_no}: not an object with a task_id")
        key = json.dumps(record["task_id"])
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
    mode = settings.resolved_mode()
    generations = _generations_beside(answers_path, out_dir)
    items, rows = [], []
    for answer in answers:
        task, text = answer["task"], answer["answer"]
        row = {"task_id": task["task_id"], "answer_chars": len(text),
               "flags": rule_flags(text, generations.get(json.dumps(task["task_id"])))}
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
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "scores.jsonl", rows)
    summary = summarize(rows)
    summary.update(judge_backend=settings.judge_backend, judge_model=settings.judge_model,
                   judge_mode=mode, prompt=prompt.name, prompt_hash=prompt.hash,
                   answers=str(answers_path), tasks=tasks_label, n_tasks=len(tasks),
                   n_unanswered=len(tasks) - len(answers),
                   judge_calls=getattr(judge, "calls", 0) if judge else 0)
    overlaps = _overlaps_beside(answers_path, out_dir)
    if overlaps is not None:
        summary["task_overlaps"] = overlaps
    write_json(out_dir / "score.json", summary)
    return summary


def _sidecar(name: str, answers_path, out_dir) -> Path | None:
    """infer.py's run files live in results/<run>/, beside the answers or in the judge's out_dir."""
    return next((folder / name for folder in (Path(answers_path).parent, Path(out_dir))
                 if (folder / name).is_file()), None)


def _generations_beside(answers_path, out_dir) -> dict:
    """infer.py's generations.jsonl sidecar (new tokens, stop reason per task), when present."""
    path = _sidecar("generations.jsonl", answers_path, out_dir)
    if path is None:
        return {}
    return {json.dumps(r["task_id"]): r for _, r in iter_jsonl(path, skip_bad_lines=True)
            if isinstance(r, dict) and "task_id" in r}


def _overlaps_beside(answers_path, out_dir):
    path = _sidecar("infer_metrics.json", answers_path, out_dir)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("task_overlaps")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


# ---- statistics ----------------------------------------------------------------------------

def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95% percentile interval of the mean, resampling tasks."""
    import numpy as np

    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summarize(rows: list[dict]) -> dict:
    from collections import Counter

    scored = [r for r in rows if r.get("score") is not None]
    values = [r["score"] for r in scored]
    flags = Counter(flag for r in rows for flag in r["flags"])
    histogram = Counter(str(min(5, max(1, int(round(v))))) for v in values)
    summary = {"score": round(sum(values) / len(values), 4) if values else None,
               "ci95": bootstrap_ci(values), "n": len(values), "n_failed": len(rows) - len(values),
               "histogram": {d: histogram.get(d, 0) for d in DIGITS}, "flag_counts": dict(flags),
               "length_score_spearman": spearman([r["answer_chars"] for r in scored], values)}
    return summary


def spearman(a, b) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    return round(float(spearmanr(a, b).statistic), 4)


def pearson(a, b) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import pearsonr

    return round(float(pearsonr(a, b).statistic), 4)


def quadratic_weighted_kappa(a: list[int], b: list[int], low: int = 1, high: int = 5) -> float | None:
    import numpy as np

    k = high - low + 1
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - low, y - low] += 1
    if observed.sum() == 0:
        return None
    weights = np.array([[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)])
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    denominator = (weights * expected).sum()
    return None if denominator == 0 else round(float(1 - (weights * observed).sum() / denominator), 4)


def paired_bootstrap(a: dict, b: dict, resamples: int = 10000, seed: int = 0) -> dict:
    """B - A over the tasks both scored: mean difference, its 95% interval, better/worse/same."""
    import numpy as np

    common = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    if not common:
        raise KitError("the two score sets share no scored task")
    diffs = np.array([b[k] - a[k] for k in common], dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
    return {"n": len(common), "mean_a": round(float(np.mean([a[k] for k in common])), 4),
            "mean_b": round(float(np.mean([b[k] for k in common])), 4),
            "difference": round(float(diffs.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
            "better": int((diffs > 1e-9).sum()), "worse": int((diffs < -1e-9).sum()),
            "same": int((np.abs(diffs) <= 1e-9).sum()), "interval_contains_zero": low <= 0 <= high}
