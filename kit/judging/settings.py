"""The judge's settings: judge.py's flags, and the keys of a judge config (infer.py --judge CONFIG,
train.py --sweep ... --score CONFIG)."""
from __future__ import annotations

from dataclasses import dataclass

from kit.io import KitError
from kit.settings import opt

BACKENDS = ("hf", "openai")
MODES = ("auto", "logprob", "digit", "json")


@dataclass
class JudgeSettings:
    """the judge: backend, model, mode"""
    judge_backend: str = opt("hf", "hf: a local model in-process; openai: any OpenAI-compatible "
                                   "endpoint", choices=BACKENDS)
    judge_model: str | None = opt(None, "hf: a model folder or Hub name; openai: the served model's name")
    base_url: str | None = opt(None, "openai: e.g. http://127.0.0.1:8000/v1 for `vllm serve`")
    judge_mode: str = opt("auto", "logprob: expected grade from the judge's distribution over 1-5 "
                                  "(auto picks it); digit/json: parse a reply", choices=MODES)
    judge_prompt: str = opt("judge_elyza", "prompts/<name>.jinja")
    repeats: int = opt(1, "digit/json: judge each answer this many times and score the mean (needs "
                          "judge_temperature > 0; logprob mode already has the judge's distribution)")
    judge_temperature: float = opt(0.0, "digit/json: the judge's sampling temperature (0: greedy)")
    workers: int = opt(4, "openai: requests in flight")
    max_retries: int = opt(3, "re-asks after an unparsable reply, then the task is recorded as failed")
    judge_timeout: float = opt(120.0, "openai: seconds per request")
    backoff_s: float = opt(1.0, "openai: first retry delay, doubled per retry, with jitter")
    judge_batch_size: int = opt(4, "hf: prompts per forward pass")
    judge_load_in_4bit: bool = opt(False, "hf: load the judge in nf4")
    judge_max_new_tokens: int = opt(256, "digit/json: longest reply")
    cache_dir: str = opt("results/.cache/judge", "judgments are cached here")

    def check(self) -> None:
        """Everything that can be wrong before a judge loads or a request goes out."""
        if not self.judge_model:
            raise KitError("judge_model is required (a model folder/name, or the served model's name "
                           "for the openai backend)")
        if self.judge_backend == "openai" and not self.base_url:
            raise KitError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        for name in ("workers", "judge_batch_size", "judge_max_new_tokens"):
            if getattr(self, name) < 1:
                raise KitError(f"{name} must be a positive integer")
        if self.max_retries < 0:
            raise KitError("max_retries must be 0 or more")
        if self.repeats < 1 or not 0 <= self.judge_temperature <= 2:
            raise KitError("repeats must be at least 1 and judge_temperature from 0 to 2")
        if self.repeats > 1 and self.mode == "logprob":
            raise KitError("repeats are for judge_mode digit or json: logprob mode already scores the "
                           "judge's whole distribution over 1-5")
        if self.repeats > 1 and self.judge_temperature == 0:
            raise KitError("repeats at judge_temperature 0 ask a greedy judge the same question again: "
                           "set judge_temperature (e.g. 0.7)")
        if not self.judge_timeout > 0 or not self.backoff_s >= 0:
            raise KitError("judge_timeout must be > 0 and backoff_s >= 0")
        from prompts import TemplateError, load_judge_prompt

        try:
            load_judge_prompt(self.judge_prompt)
        except TemplateError as err:
            raise KitError(str(err)) from None

    def record(self) -> dict:
        """What changes a judgment, for score.json and the cache key."""
        return {"judge_backend": self.judge_backend, "judge_model": self.judge_model,
                "judge_mode": self.mode, "judge_load_in_4bit": self.judge_load_in_4bit,
                "judge_temperature": self.judge_temperature, "repeats": self.repeats,
                "judge_max_new_tokens": self.judge_max_new_tokens}

    @property
    def mode(self) -> str:
        """The mode asked of the backend: auto is logprob, which both backends serve (a server
        that gives no logprobs has its reply parsed instead)."""
        return "logprob" if self.judge_mode == "auto" else self.judge_mode
