"""Render a record into prompt text: one home for every text a model sees (training and inference
templates, the judge's rubric).

    from prompts import load_template
    template = load_template("alpaca_ja")
    template.prompt("日本の首都は？")                       # what the model sees, training and inference
    template.prompt(task, examples=[{"input": q, "output": a}, ...])   # few-shot, most similar last
    template.completion("東京です。")                        # the training target (EOS added by trl)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

HERE = Path(__file__).parent
GEMMA2_CHAT_TEMPLATE = (HERE / "gemma2_chat.jinja").read_text(encoding="utf-8")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    source: str
    completion_suffix: str = ""
    stop: tuple = ()
    markers: tuple = ()
    description: str = ""
    _jinja: object = field(default=None, compare=False, repr=False)

    def prompt(self, instruction: str, examples=(), context: str | None = None) -> str:
        examples = [{"input": e["input"], "output": e["output"]} for e in examples]
        return self._jinja.render(instruction=instruction, examples=examples, context=context)

    def completion(self, response: str) -> str:
        return response + self.completion_suffix


@cache
def _registry() -> dict:
    import yaml

    return yaml.safe_load((HERE / "templates.yaml").read_text(encoding="utf-8"))


def template_names() -> list[str]:
    return sorted(_registry())


def load_template(name: str) -> PromptTemplate:
    import jinja2

    registry = _registry()
    if name not in registry:
        raise TemplateError(f"unknown prompt template {name!r}; known: {', '.join(template_names())}")
    entry = registry[name]
    source = (HERE / "templates" / entry["file"]).read_text(encoding="utf-8")
    environment = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return PromptTemplate(name=name, source=source, completion_suffix=entry.get("completion_suffix", ""),
                          stop=tuple(entry.get("stop", ())), markers=tuple(entry.get("markers", ())),
                          description=entry.get("description", ""),
                          _jinja=environment.from_string(source))


@dataclass(frozen=True)
class JudgePrompt:
    """A grading prompt (prompts/<name>.jinja), versioned by the hash of its source."""
    name: str
    source: str
    _jinja: object = field(default=None, compare=False, repr=False)

    @property
    def hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()[:12]

    def render(self, question: str, reference: str, eval_aspect: str, answer: str,
               mode: str = "digit") -> str:
        return self._jinja.render(question=question, reference=reference, eval_aspect=eval_aspect,
                                  answer=answer, mode=mode)


def load_judge_prompt(name: str = "judge_elyza") -> JudgePrompt:
    import jinja2

    path = HERE / f"{name}.jinja"
    if not name.startswith("judge_") or not path.exists():
        known = sorted(p.stem for p in HERE.glob("judge_*.jinja"))
        raise TemplateError(f"unknown judge prompt {name!r}; known: {', '.join(known)}")
    source = path.read_text(encoding="utf-8")
    environment = jinja2.Environment(keep_trailing_newline=False, undefined=jinja2.StrictUndefined)
    return JudgePrompt(name=name, source=source, _jinja=environment.from_string(source))


@cache
def refusal_phrases() -> tuple[str, ...]:
    """Phrases of an over-cautious refusal (the rubric scores those 2), one a line; read once."""
    lines = (HERE / "refusal_phrases.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
