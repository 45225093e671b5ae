"""Judge backends: a local causal LM (`hf`) or any OpenAI-compatible chat endpoint (`openai`).
Each has `judge_batch(prompts, mode)` → one result dict per prompt: the distribution over "1".."5"
and its expected value (logprob mode) or the parsed grade and reply (digit/json), the attempts
made, and `error` when no grade came back."""
from __future__ import annotations

import json
import math
import os
import random
import re
import sys
import threading
import time

from kit.io import KitError
from kit.judging.settings import JudgeSettings

DIGITS = ("1", "2", "3", "4", "5")
NETWORK_RETRIES = 6  # 429 / 5xx / timeouts / connection errors, per request
DIGIT_REPLY_TOKENS = 16  # digit mode: the grade, perhaps after a few words
KEY_VARIABLES = ("JUDGE_API_KEY", "OPENAI_API_KEY")


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
    if not (mass > 0 and math.isfinite(mass)):
        return None
    distribution = {d: probs.get(d, 0.0) / mass for d in DIGITS}
    expected = sum(int(d) * p for d, p in distribution.items())
    return {"distribution": {d: round(p, 6) for d, p in distribution.items()},
            "expected": round(expected, 6), "digit_mass": round(mass, 6)}


class HFJudge:
    """A local causal LM: one forward pass per batch in logprob mode, generation otherwise."""
    name = "hf"

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
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        context = getattr(self.model.config, "max_position_embeddings", None)
        over = int((encoded.attention_mask.sum(dim=1) > context).sum()) if context else 0
        if over:
            print(f"warning: {over} judge prompt(s) longer than the judge's context ({context} tokens): its "
                  "grade of them is unreliable; use a judge with a longer context", file=sys.stderr)
        if mode == "logprob":
            encoded = encoded.to(self.model.device)
            with torch.no_grad():
                logits = self.model(**encoded).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)[:, self.digit_ids].tolist()
            return [{**distribution_from_probs(dict(zip(DIGITS, row))), "attempts": 1} for row in probs]
        from kit.generation import Sampling, generate_batch

        results = [None] * len(prompts)
        pending = list(range(len(prompts)))
        temperature = self.settings.judge_temperature
        for attempt in range(1, attempts_for(self.settings) + 1):
            sampling = Sampling(max_new_tokens=self.settings.judge_max_new_tokens, do_sample=temperature > 0,
                                temperature=temperature or 1.0)
            asked = [self.chat(reask(prompts[i], attempt, temperature)) for i in pending]
            replies = generate_batch(self.model, self.tokenizer, asked, sampling)
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


REASK = "\n\n点数を1から5の数字一つだけで答えてください。"  # the re-ask of a greedy judge: other words


def attempts_for(settings: JudgeSettings) -> int:
    """A parse failure is asked again only where the answer can change: a sampling judge gets
    max_retries more tries of the same request, a greedy one a single re-ask in other words."""
    return settings.max_retries + 1 if settings.judge_temperature > 0 else min(2, settings.max_retries + 1)


def reask(prompt: str, attempt: int, temperature: float) -> str:
    return prompt + REASK if attempt > 1 and temperature == 0 else prompt


class OpenAIJudge:
    """Any OpenAI-compatible chat endpoint; the key comes from JUDGE_API_KEY or OPENAI_API_KEY."""
    name = "openai"

    def __init__(self, settings: JudgeSettings):
        from openai import OpenAI

        self.settings = settings
        self.key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
        # the client's own retries are off: ours count attempts and honour Retry-After
        self.client = OpenAI(base_url=settings.base_url, api_key=self.key or "not-needed",
                             max_retries=0, timeout=settings.judge_timeout)
        self.lock = threading.Lock()
        self.no_logprobs = threading.Event()  # set when the endpoint answered without logprobs
        self.stopped = threading.Event()  # set on a refused request: nothing more is sent
        self.reached = threading.Event()  # set once any request got an answer
        self.calls = 0

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    def request(self, prompt: str, mode: str):
        """One completion, retried on 429/5xx/timeouts/connection errors: (response, requests)."""
        import openai

        if mode == "logprob" and not self.no_logprobs.is_set():
            extra = dict(max_tokens=1, logprobs=True, top_logprobs=20)
        else:  # a digit reply: room for a short preamble before the grade
            extra = dict(max_tokens=self.settings.judge_max_new_tokens if mode == "json" else DIGIT_REPLY_TOKENS)
        for attempt in range(1, NETWORK_RETRIES + 2):
            if self.stopped.is_set():
                raise TransientFailure("not sent: the endpoint refused an earlier request", attempt - 1)
            with self.lock:
                self.calls += 1
            try:
                response = self.within_deadline(lambda: self.client.chat.completions.create(
                    model=self.settings.judge_model, temperature=self.settings.judge_temperature,
                    messages=[{"role": "user", "content": prompt}], **extra))
                self.reached.set()
                return response, attempt
            except (ValueError, openai.APIResponseValidationError) as err:  # a 200 whose body is not JSON
                if attempt > NETWORK_RETRIES:
                    raise TransientFailure(f"unreadable replies ({type(err).__name__}) after {attempt} requests",
                                           attempt) from err
                continue
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
                    raise TransientFailure(f"{type(err).__name__} after {attempt} requests", attempt) from err
                delay = self.settings.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                response = getattr(err, "response", None)
                retry_after = response.headers.get("retry-after") if response is not None else None
                if retry_after:
                    try:
                        delay = max(delay, float(retry_after))
                    except ValueError:
                        pass
                time.sleep(min(delay, 60.0))

    def within_deadline(self, call):
        """`call()` under --judge_timeout for the whole request: a server that trickles a byte at a
        time never trips the client's per-read timeout, so the request runs in a thread that is
        abandoned at the deadline."""
        import openai

        outcome = {}

        def run():
            try:
                outcome["response"] = call()
            except BaseException as err:  # handed to the caller's handlers below
                outcome["error"] = err

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(self.settings.judge_timeout)
        if worker.is_alive():
            raise openai.APITimeoutError(request=None)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["response"]

    def judge_one(self, prompt: str, mode: str) -> dict:
        attempts, last_reply = 0, None
        for attempt in range(1, attempts_for(self.settings) + 1):
            try:
                response, requests = self.request(reask(prompt, attempt, self.settings.judge_temperature), mode)
            except TransientFailure as failure:
                return {"attempts": attempts + failure.requests, "error": str(failure)}
            attempts += requests
            reply, top = _reply_and_top_logprobs(response)
            last_reply = reply
            if mode == "logprob" and top:
                scored = distribution_from_probs(_digit_probs(top))
                if scored:
                    return {**scored, "reply": reply, "attempts": attempts}
            if mode == "logprob" and not top and not self.no_logprobs.is_set():
                self.no_logprobs.set()
                print(f"note: {self.settings.base_url} gives no logprobs; this run is scored in digit mode "
                      f"(replies up to {DIGIT_REPLY_TOKENS} tokens)", file=sys.stderr)
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


def _digit_probs(top: list) -> dict:
    """Probabilities of "1".."5" from [(token, logprob)]; values that are not finite are dropped."""
    probs = {}
    for token, logprob in top:
        if token.strip() in DIGITS and isinstance(logprob, (int, float)) and math.isfinite(logprob):
            probs[token.strip()] = probs.get(token.strip(), 0.0) + math.exp(min(logprob, 0.0))
    return probs


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
