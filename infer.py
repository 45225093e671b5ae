r"""RAG few-shot inference over an elyza-tasks file into a validated output.jsonl.

    python infer.py --model google/gemma-2-27b --adapter results/<run>/adapter \
        --tasks elyza-tasks-100-TV_0.jsonl --reference qa111.jsonl --k 20 \
        --retriever colbert --retriever_model bclavie/JaColBERTv2 --output output.jsonl
    python infer.py ... --dry_run                  # write prompts.jsonl, load no model
    python infer.py ... --resume                   # keep finished tasks, do only the rest
    python infer.py ... --judge configs/score_dev.yaml   # dev tasks: answer, then score them
    python infer.py validate --tasks elyza-tasks-100-TV_0.jsonl --output output.jsonl

For each task the k nearest reference QAs become few-shot examples (most similar last), rendered
with the template the adapter was trained with (read from results/<run>/config.yaml), then the
model answers. Greedy by default; banned strings are blocked in every tokenization of them.
Beside the answers, the run folder gets prompts (dry run), generations.jsonl (new tokens and stop
reason per task) and infer_metrics.json (timing, the 100-task projection, overlaps).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from kit.answers import Answers
from kit.generation import Sampling, choose_backend, make_generator
from kit.io import KitError, check_output, hold, run_main, write_json, write_jsonl
from kit.judging.settings import JudgeSettings
from kit.runs import AnswerDir, RunDir, answers_folder
from kit.settings import parse_settings, settings_from_file
from kit.stage_settings import InferSettings
from kit.tasks import garbled_warning, load_tasks, report_overlaps, validate_output
from kit.text import tokenizable

L4_BUDGET_S = 3600  # the competition's limit: 100 tasks within 1 hour on one NVIDIA L4
MIN_NEW_TOKENS = 128  # a task whose prompt leaves less room than this has its input shortened
TRUNCATION_MARKER = "\n……（中略）……\n"


# ---- prompts ------------------------------------------------------------------------------

def template_for(settings: InferSettings) -> str:
    if settings.template:
        return settings.template
    run = RunDir.of_adapter(settings.adapter)
    if run is not None:
        name = run.read_config().get("template", "alpaca_ja")
        print(f"template: {name} (from the adapter's run config)")
        return name
    return "alpaca_ja"


def retrieve_examples(settings: InferSettings, tasks, references, cache_dir) -> list[list[dict]]:
    """The k nearest references of each task, most similar last."""
    if not references or settings.k == 0:
        return [[] for _ in tasks]
    from rag import make_retriever

    retriever = make_retriever(settings.retriever, settings.retriever_model, cache_dir)
    retriever.index([r["input"] for r in references])
    return [[references[index] for index, _ in reversed(retriever.search(task["input"], settings.k))]
            for task in tasks]


def fit_prompts(settings: InferSettings, tasks, examples, template, tokenizer, context: int):
    """(prompts, token counts, new-token budgets, drop stats): prompts that fit the context with
    room for max_new_tokens; the least similar examples go first, and a task too long even alone
    gets a smaller budget, or below MIN_NEW_TOKENS its input cut in the middle."""
    prompts, lengths, budgets = [], [], []
    stats = dict.fromkeys(("examples_dropped_to_fit", "tasks_with_examples_dropped",
                           "tasks_with_generation_budget_shrunk", "tasks_with_input_truncated"), 0)
    room = context - settings.max_new_tokens
    for task, shots in zip(tasks, examples):
        before = len(shots)
        while True:
            prompt = tokenizable(template.prompt(task["input"], examples=shots))
            length = len(tokenizer(prompt).input_ids)
            if length <= room or not shots:
                break
            shots = shots[1:]
        stats["examples_dropped_to_fit"] += before - len(shots)
        stats["tasks_with_examples_dropped"] += before > len(shots)
        budget = settings.max_new_tokens
        if length > room:
            budget = context - length
            if budget >= min(MIN_NEW_TOKENS, settings.max_new_tokens):
                stats["tasks_with_generation_budget_shrunk"] += 1
                note = f"max_new_tokens {budget} for it"
            else:
                budget = min(MIN_NEW_TOKENS, settings.max_new_tokens)
                prompt, length = truncated_prompt(task["input"], template, tokenizer, context - budget)
                stats["tasks_with_input_truncated"] += 1
                note = f"its input cut in the middle to {length} prompt tokens"
            print(f"warning: {settings.tasks}:{task['line']}: task {task['task_id']!r} does not fit "
                  f"{context} tokens with max_new_tokens {settings.max_new_tokens}; {note}", file=sys.stderr)
        prompts.append(prompt)
        lengths.append(length)
        budgets.append(budget)
    return prompts, lengths, budgets, stats


def truncated_prompt(text: str, template, tokenizer, limit: int) -> tuple[str, int]:
    """The task's prompt with the middle of its input cut (marked) so it takes <= limit tokens."""
    keep = len(text)
    while keep > 0:
        keep = keep * 9 // 10
        prompt = tokenizable(template.prompt(text[: keep // 2] + TRUNCATION_MARKER + text[len(text) - keep // 2:]))
        length = len(tokenizer(prompt).input_ids)
        if length <= limit:
            return prompt, length
    raise KitError(f"the {template.name!r} prompt template alone takes more than {limit} tokens")


def prepare(settings: InferSettings, tasks, out: AnswerDir):
    """(prompts, budgets, context length, stats with the overlaps): nothing heavy but a tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from prompts import load_template
    from rag import load_references

    template = load_template(template_for(settings))
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.model, padding_side="left")
        context = settings.context_length or getattr(AutoConfig.from_pretrained(settings.model),
                                                     "max_position_embeddings", 8192)
    except OSError as err:
        raise KitError(f"{settings.model}: cannot load tokenizer/config ({err})") from None
    references = load_references(settings.reference) if settings.reference else []
    run = RunDir.of_adapter(settings.adapter)
    data_files = run.read_config().get("data_files") if run else []
    overlaps = report_overlaps(tasks, settings.reference, references, data_files)
    examples = retrieve_examples(settings, tasks, references, Path(settings.results_dir) / ".cache" / "rag")
    prompts, lengths, budgets, stats = fit_prompts(settings, tasks, examples, template, tokenizer, context)
    if settings.dry_run:
        write_jsonl(out.prompts, ({"task_id": t["task_id"], "prompt": p, "prompt_tokens": n,
                                   "max_new_tokens": b} for t, p, n, b in zip(tasks, prompts, lengths, budgets)))
    return template, prompts, budgets, context, {**stats, "task_overlaps": overlaps}


# ---- answers ------------------------------------------------------------------------------

# ---- after generation ---------------------------------------------------------------------

def timing(backend: str, batch_size: int, load_s: float, generate_s: float, generated: int,
           new_tokens: int) -> dict:
    """Throughput and the 100-task projection against the L4 budget; printed and returned."""
    per_task = generate_s / max(1, generated)
    projected = load_s + per_task * 100
    metrics = {"backend": backend, "batch_size": batch_size, "load_s": round(load_s, 2),
               "generate_s": round(generate_s, 2), "new_tokens": new_tokens,
               "tokens_per_s": round(new_tokens / max(generate_s, 1e-9), 1),
               "mean_task_latency_s": round(per_task, 3), "projected_100_tasks_s": round(projected, 1),
               "projection_assumption": "load time + 100 × this run's mean per-task generation time, on "
                                        "this machine and batch size; an L4 must be measured"}
    verdict = "within" if projected <= L4_BUDGET_S else "OVER"
    print(f"{generated} tasks in {generate_s:.1f} s ({metrics['tokens_per_s']} tokens/s); 100 tasks projected "
          f"{projected:.0f} s here, {verdict} the {L4_BUDGET_S} s budget ({metrics['projection_assumption']})")
    return metrics


def check_and_score(settings: InferSettings, tasks, out: AnswerDir, judge: JudgeSettings | None) -> dict:
    """Validate what was written (a dev run may hold empty answers: the judge scores them 1), then
    score it when a judge is set and the tasks have reference answers."""
    problems = validate_output(settings.tasks, settings.output) if not settings.limit else []
    if judge is not None:
        empty = [p for p in problems if p.endswith("`output` must be a non-empty string")]
        problems = [p for p in problems if p not in empty]
        if empty:
            print(f"warning: {len(empty)} empty answer(s); the judge scores them 1 (a submission "
                  "with them would be invalid)", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise KitError(f"{settings.output}: {len(problems)} problem(s) found by the validator")
    garbled = garbled_warning(settings.output)
    if garbled:
        print(garbled, file=sys.stderr)
    print(f"output: {Path(settings.output).resolve()}; run files: {out.path}")
    if judge is None:
        print(next_step(settings, tasks))
        return {}
    if not all(t.get("output") for t in tasks):
        print(f"warning: {settings.tasks} has no reference outputs; --judge skipped", file=sys.stderr)
        return {}
    from kit.judging.scoring import score_answers, score_line
    from kit.tracking import log_score

    summary = score_answers(settings.output, tasks, judge, out.path, tasks_label=settings.tasks)
    print(f"{score_line(summary)} → {out.score}")
    log_score(RunDir(out.path), summary)
    return {"score": summary["score"], "ci95": summary["ci95"]}


def next_step(settings: InferSettings, tasks) -> str:
    """Dev tasks (with reference answers) are scored next; a submission's model is merged and pushed."""
    if all(t.get("output") for t in tasks):
        return (f"next: python judge.py --answers {settings.output} --tasks {settings.tasks} --judge_backend openai "
                "--base_url <endpoint> --judge_model <judge> (or --judge CONFIG here)")
    if settings.adapter:
        return (f"next: python quantize_push.py --model {settings.model} --adapter {settings.adapter} "
                "--output models/<name>-bnb-4bit --push_to <you>/<name>")
    return f"next: submit {settings.output} with the model's Hub repo and the commands that made it"


def ban_note(backend: str, bans) -> dict:
    """How --ban was enforced, where the backends differ."""
    if backend != "vllm" or not bans:
        return {}
    from kit.generation.vllm import BAN_DIFFERENCE

    return {"ban_blocking": BAN_DIFFERENCE}


def generate(settings: InferSettings, tasks, out: AnswerDir, template, prompts, budgets, context: int):
    """(answers, timing): the tasks not answered yet, generated in batches and saved as they come."""
    from transformers import set_seed

    answers = Answers(settings, tasks, out, template)
    todo = answers.todo()
    print(f"{len(tasks)} tasks, {len(tasks) - len(todo)} already answered, {len(todo)} to generate")
    backend = choose_backend(settings.backend, len(todo), settings.temperature if settings.do_sample else 0.0)
    set_seed(settings.seed)
    tick = time.perf_counter()
    generator = make_generator(backend, settings.model, settings.adapter, Sampling.from_settings(settings),
                               settings.ban, answers.stops, settings.batch_size, settings.load_in_4bit,
                               context, settings.seed)
    load_s, tick = time.perf_counter() - tick, time.perf_counter()
    generations = generator.generate([prompts[i] for i in todo], [budgets[i] for i in todo],
                                     on_batch=lambda batch, gens, s: answers.record([todo[i] for i in batch], gens, s))
    new_tokens = sum(g.new_tokens for g in generations)
    return answers, {"generated": len(todo), **timing(backend, settings.batch_size, load_s,
                                                      time.perf_counter() - tick, len(todo), new_tokens)}


def validate_main(argv) -> list[str]:
    import argparse

    parser = argparse.ArgumentParser(prog="infer.py validate",
                                     description="check an output.jsonl against its task file")
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    problems = validate_output(args.tasks, args.output)
    for problem in problems:
        print(problem)
    if problems:
        raise KitError(f"{args.output}: {len(problems)} problem(s)")
    print(f"{args.output}: valid ({len(load_tasks(args.tasks))} tasks)")
    garbled = garbled_warning(args.output)
    if garbled:
        print(garbled, file=sys.stderr)
    return problems


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["validate"]:
        return validate_main(argv[1:])
    settings, info = parse_settings(InferSettings, argv, prog="infer.py", doc=__doc__, also_known=(JudgeSettings,))
    judge = settings_from_file(JudgeSettings, settings.judge, (InferSettings,)) if settings.judge else None
    start = time.perf_counter()
    all_tasks = load_tasks(settings.tasks)
    tasks = all_tasks[: settings.limit]
    out = answers_folder(settings, info.explicit)
    if not settings.output:  # the default, in the run's answers folder: checked as a given one is
        settings.output = str(out.output)
        check_output(settings.output, {"--tasks": settings.tasks, "--reference": settings.reference,
                                       "--model": settings.model, "--adapter": settings.adapter})
    template, prompts, budgets, context, stats = prepare(settings, tasks, out)
    if settings.dry_run:
        fitted = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items() if k != "task_overlaps" and v)
        print(f"dry run: {len(prompts)} prompts → {out.prompts}" + (f" ({fitted})" if fitted else "")
              + (f"; {len(stats['task_overlaps'])} task overlap(s)" if stats["task_overlaps"] else ""))
        return {"prompts": str(out.prompts), **stats}
    with hold(settings.output, "infer.py"):  # one run at a time on an output
        answers, timed = generate(settings, tasks, out, template, prompts, budgets, context)
        answers.finish(all_tasks)
    if settings.csv:
        answers.write_csv(settings.csv)
    from kit.models import peak_memory

    metrics = {"tasks": len(tasks), **timed,
               "truncated_at_max_new_tokens": sum(g["stop_reason"] == "length" for g in answers.info.values()),
               **peak_memory(), **stats, **ban_note(timed["backend"], settings.ban), "argv": argv}
    metrics["total_s"] = round(time.perf_counter() - start, 2)
    write_json(out.infer_metrics, metrics)
    metrics.update(check_and_score(settings, tasks, out, judge))
    return metrics


if __name__ == "__main__":
    run_main(main, resume_flag="--resume")
